//! One chat as its owner holds it in memory: the next seq, members and roles, and the checks
//! that turn a request into log entries.
//!
//! Owns the membership rules of DESIGN.md F1–F2 and docs/PROTOCOL.md §4.3–4.5: who may send,
//! add, remove, promote or leave, the group size limit, and the order of the `ChatUpdate`s
//! one `ModifyParticipants` produces (added, removed, left, promoted, each at its own seq).
//! Invariant: `head` is the last seq handed out; the store holds `head` or fewer (the rest is
//! in the owner's pending or in-flight write).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use foldhash::HashMap;
use store::model::{Change, ChatState, ReceiptKind, Role, Seq};
use wire::enums::ErrorCode;
use wire::ids::{ChatId, ChatKind, DeviceId, UserId};

use crate::types::Answer;

/// How many recent (seq, sender) pairs a chat remembers, to address receipts.
const RECENT_SENDERS: usize = 64;

/// A chat in the owner's memory.
#[derive(Debug, Clone)]
pub(crate) struct Chat {
    pub(crate) id: ChatId,
    /// The last seq handed out.
    pub(crate) head: Seq,
    pub(crate) members: BTreeMap<UserId, Role>,
    /// Cached sorted member list for audiences; rebuilt when membership changes.
    audience: Option<Arc<[UserId]>>,
    /// Server time of the last entry (entries get non-decreasing times).
    pub(crate) last_ts: u64,
    /// The last few message senders, for receipts.
    pub(crate) recent_senders: VecDeque<(Seq, UserId)>,
    /// Each sender's last message since the chat was loaded (at most one per member).
    last_sent: HashMap<UserId, Seq>,
    /// The highest ack seen per device and kind since the chat was loaded: a lower or equal
    /// ack moves nothing and sends no receipt.
    pub(crate) acked: HashMap<(UserId, DeviceId, ReceiptKind), Seq>,
}

/// The entries one `ModifyParticipants` produces, in order.
pub(crate) type Changes = Vec<Change>;

impl Chat {
    /// A chat as the store has it (`None`: a direct chat that has no entries yet).
    pub(crate) fn loaded(id: ChatId, state: Option<&ChatState>) -> Option<Self> {
        match state {
            Some(s) => Some(Self {
                id,
                head: s.head,
                members: s.members.iter().map(|m| (m.user, m.role)).collect(),
                audience: None,
                last_ts: s.created_ms,
                recent_senders: VecDeque::new(),
                last_sent: HashMap::default(),
                acked: HashMap::default(),
            }),
            None => Self::new_direct(id),
        }
    }

    /// A direct chat before its first message; `None` for a group id.
    fn new_direct(id: ChatId) -> Option<Self> {
        let (a, b) = id.direct_users()?;
        Some(Self {
            id,
            head: 0,
            members: [(a, Role::Member), (b, Role::Member)].into_iter().collect(),
            audience: None,
            last_ts: 0,
            recent_senders: VecDeque::new(),
            last_sent: HashMap::default(),
            acked: HashMap::default(),
        })
    }

    /// A new group, before its `Created` entry.
    pub(crate) fn new_group(id: ChatId) -> Self {
        Self {
            id,
            head: 0,
            members: BTreeMap::new(),
            audience: None,
            last_ts: 0,
            recent_senders: VecDeque::new(),
            last_sent: HashMap::default(),
            acked: HashMap::default(),
        }
    }

    /// Whether the chat exists for senders (a direct chat always does).
    pub(crate) fn exists(&self) -> bool {
        self.head > 0 || self.id.kind() == ChatKind::Direct
    }

    pub(crate) fn is_member(&self, user: UserId) -> bool {
        self.members.contains_key(&user)
    }

    /// The next seq and a non-decreasing timestamp for a new entry.
    pub(crate) fn next(&mut self, now_ms: u64) -> (Seq, u64) {
        self.head += 1;
        self.last_ts = self.last_ts.max(now_ms);
        (self.head, self.last_ts)
    }

    /// The current members, sorted, shared.
    pub(crate) fn audience(&mut self) -> Arc<[UserId]> {
        self.audience
            .get_or_insert_with(|| self.members.keys().copied().collect())
            .clone()
    }

    /// Remembers who sent `seq`.
    pub(crate) fn note_sender(&mut self, seq: Seq, sender: UserId) {
        if self.recent_senders.len() == RECENT_SENDERS {
            self.recent_senders.pop_front();
        }
        self.recent_senders.push_back((seq, sender));
        self.last_sent.insert(sender, seq);
    }

    /// Who gets the receipt of `user`'s ack moving from `old` to `up_to`: the senders (other
    /// than `user`) of messages in `old + 1 ..= up_to` as far as the owner knows them. Exact
    /// within the last [`RECENT_SENDERS`] messages; below them, every user who sent anything
    /// after `old` since the chat was loaded (a superset: receipts are cumulative). In a
    /// direct chat, always the other user.
    pub(crate) fn receipt_targets(&self, old: Seq, up_to: Seq, user: UserId) -> Vec<UserId> {
        if self.id.kind() == ChatKind::Direct {
            return self
                .id
                .direct_users()
                .map(|(a, b)| if a == user { b } else { a })
                .filter(|other| *other != user)
                .into_iter()
                .collect();
        }
        let mut out: Vec<UserId> = self
            .recent_senders
            .iter()
            .filter(|(seq, sender)| *seq > old && *seq <= up_to && *sender != user)
            .map(|(_, sender)| *sender)
            .collect();
        let covered = self
            .recent_senders
            .front()
            .is_some_and(|(s, _)| *s <= old + 1);
        if !covered {
            out.extend(
                self.last_sent
                    .iter()
                    .filter(|(sender, seq)| **seq > old && **sender != user)
                    .map(|(sender, _)| *sender),
            );
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Applies a membership change to memory (the same rules as the store's apply).
    pub(crate) fn apply(&mut self, actor: UserId, change: &Change) {
        self.audience = None;
        match change {
            Change::Created { members, .. } => {
                self.members = members.iter().copied().collect();
            }
            Change::Added(users) => {
                for &u in users {
                    self.members.entry(u).or_insert(Role::Member);
                }
            }
            Change::Removed(users) => {
                for u in users {
                    self.members.remove(u);
                }
            }
            Change::Left => {
                self.members.remove(&actor);
            }
            Change::Promoted(users) => {
                for u in users {
                    if let Some(role) = self.members.get_mut(u) {
                        *role = Role::Admin;
                    }
                }
            }
        }
    }

    /// Checks a `ModifyParticipants` by `actor` and returns the changes it makes, in order
    /// (empty when it changes nothing).
    pub(crate) fn plan_modify(
        &self,
        actor: UserId,
        add: &[UserId],
        remove: &[UserId],
        promote: &[UserId],
        group_members_max: usize,
    ) -> Result<Changes, Answer> {
        if self.id.kind() != ChatKind::Group {
            return Err(Answer::error(
                ErrorCode::InvalidArgument,
                "a direct chat has no participants to change",
            ));
        }
        if !self.exists() {
            return Err(Answer::error(ErrorCode::NotFound, "no such chat"));
        }
        let Some(&role) = self.members.get(&actor) else {
            return Err(Answer::error(
                ErrorCode::NotMember,
                "not a member of the chat",
            ));
        };
        let removes_others = remove.iter().any(|u| *u != actor);
        if role != Role::Admin && (!add.is_empty() || removes_others || !promote.is_empty()) {
            return Err(Answer::error(
                ErrorCode::NotAdmin,
                "only an admin may add, remove others or promote",
            ));
        }
        let mut added: Vec<UserId> = add
            .iter()
            .copied()
            .filter(|u| !self.members.contains_key(u))
            .collect();
        added.sort_unstable();
        added.dedup();
        let mut removed: Vec<UserId> = remove
            .iter()
            .copied()
            .filter(|u| *u != actor && self.members.contains_key(u))
            .collect();
        removed.sort_unstable();
        removed.dedup();
        let leaves = remove.contains(&actor);
        let size = self.members.len() + added.len() - removed.len() - usize::from(leaves);
        if !added.is_empty() && size > group_members_max {
            return Err(Answer::error(
                ErrorCode::GroupFull,
                "adding would exceed group_members_max",
            ));
        }
        let mut promoted: Vec<UserId> = promote
            .iter()
            .copied()
            .filter(|u| {
                self.members.get(u) == Some(&Role::Member)
                    || (added.contains(u) && !removed.contains(u))
            })
            .filter(|u| !(leaves && *u == actor))
            .collect();
        promoted.sort_unstable();
        promoted.dedup();
        let mut changes = Vec::new();
        if !added.is_empty() {
            changes.push(Change::Added(added));
        }
        if !removed.is_empty() {
            changes.push(Change::Removed(removed));
        }
        if leaves {
            changes.push(Change::Left);
        }
        if !promoted.is_empty() {
            changes.push(Change::Promoted(promoted));
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: u64) -> UserId {
        UserId::new(n).expect("valid user")
    }

    fn users(range: std::ops::RangeInclusive<u64>) -> Vec<UserId> {
        range.map(user).collect()
    }

    #[test]
    fn receipts_go_to_the_senders_in_the_acked_range_and_never_miss_older_ones() {
        let mut chat = Chat::new_group(ChatId::group(7));
        for n in 1..=100 {
            chat.note_sender(n, user(n));
        }
        // Within the remembered messages (37..=100): exactly the senders of old+1..=up_to.
        assert_eq!(chat.receipt_targets(90, 95, user(500)), users(91..=95));
        assert_eq!(
            chat.receipt_targets(90, 95, user(93)),
            [91, 92, 94, 95].map(user),
            "not to the acking user"
        );
        // Reaching below them: everyone who sent after `old` (a superset, never a miss).
        let targets = chat.receipt_targets(0, 10, user(500));
        assert!(
            users(1..=10).iter().all(|u| targets.contains(u)),
            "{targets:?}"
        );
        assert_eq!(chat.receipt_targets(99, 200, user(500)), [user(100)]);
    }

    #[test]
    fn a_direct_chats_receipts_go_to_the_other_user() {
        let chat = Chat::loaded(ChatId::direct(user(1), user(2)), None).expect("direct");
        assert_eq!(chat.receipt_targets(0, 5, user(1)), [user(2)]);
        assert_eq!(chat.receipt_targets(3, 5, user(2)), [user(1)]);
    }
}
