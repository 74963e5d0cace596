//! Cases for attachments (DESIGN.md F8): records survive a reopen and can be replaced (once
//! verified); a message references its attachments while it is retained, per chat; the
//! unreferenced ones old enough are listed for deletion, and deleting one removes its record
//! and references.

use wire::ids::{AttachmentId, ChatId, Sha256};

use super::{
    Harness, RETENTION, Subject, T0, append, delivered, dev, direct, message, must, seen, user,
};
use crate::Store;
use crate::model::{Attachment, Entry, Millis, Mutation, Seq};

fn id(n: u128) -> AttachmentId {
    AttachmentId::new(n).expect("nonzero")
}

fn attachment(n: u128, created_ms: Millis, verified: bool) -> Attachment {
    Attachment {
        id: id(n),
        user: user(1),
        device: dev(1),
        size: 1_000 + u64::try_from(n).expect("small"),
        sha256: Sha256::new([u8::try_from(n).expect("small"); 32]),
        mime: format!("image/x-{n}"),
        created_ms,
        verified,
    }
}

/// User 1's message at `seq` of `chat` referencing `ids`.
fn with_attachments(seq: Seq, ids: &[AttachmentId]) -> Entry {
    let Entry::Message(mut m) = message(user(1), dev(1), 500 + seq, T0, b"see attached") else {
        unreachable!("message() builds a message")
    };
    m.attachments = ids.to_vec();
    Entry::Message(m)
}

impl<H: Harness> Subject<H> {
    fn attachment(&self, n: u128) -> Option<Attachment> {
        must("attachment", self.store().attachment(id(n)))
    }

    fn referenced_in(&self, chat: ChatId, n: u128) -> bool {
        must("referenced_in", self.store().referenced_in(chat, id(n)))
    }

    fn unreferenced(&self, created_before: Millis, limit: usize) -> Vec<AttachmentId> {
        must(
            "unreferenced_attachments",
            self.store().unreferenced_attachments(created_before, limit),
        )
    }
}

/// A record reads back exactly, is replaced by a later put, survives a reopen, and is gone
/// after `DeleteAttachment`; an unknown id is `None`.
pub fn attachment_records<H: Harness>(h: H) {
    let mut s = Subject::open(h, RETENTION);
    assert_eq!(s.attachment(1), None);
    s.write(vec![Mutation::PutAttachment(attachment(1, T0, false))]);
    assert_eq!(s.attachment(1), Some(attachment(1, T0, false)));
    s.write(vec![Mutation::PutAttachment(attachment(1, T0, true))]);
    s.reopen();
    assert_eq!(s.attachment(1), Some(attachment(1, T0, true)));
    s.write(vec![Mutation::DeleteAttachment(id(1))]);
    assert_eq!(s.attachment(1), None);
    s.reopen();
    assert_eq!(s.attachment(1), None);
}

/// A message references its attachments in its own chat only, while it is retained; the
/// sweep lists (oldest-enough, unreferenced, ascending) what may be deleted.
pub fn attachment_references<H: Harness>(h: H) {
    let mut s = Subject::open(h, RETENTION);
    let (chat, other) = (direct(1, 2), direct(1, 3));
    s.write(vec![seen(1, 1, T0), seen(2, 1, T0), seen(3, 1, T0)]);
    s.write(
        (1..=4)
            .map(|n| {
                Mutation::PutAttachment(attachment(n, T0 + u64::try_from(n).expect("small"), true))
            })
            .collect(),
    );
    s.write(vec![
        append(chat, 1, with_attachments(1, &[id(1), id(2)])),
        append(other, 1, with_attachments(1, &[id(3)])),
    ]);
    assert!(s.referenced_in(chat, 1) && s.referenced_in(chat, 2));
    assert!(
        !s.referenced_in(chat, 3),
        "3 is referenced in the other chat only"
    );
    assert!(s.referenced_in(other, 3));
    assert!(!s.referenced_in(chat, 4) && !s.referenced_in(other, 4));
    // Only 4 is unreferenced; the creation-time bound is inclusive.
    assert_eq!(s.unreferenced(T0 + 4, 10), [id(4)]);
    assert_eq!(s.unreferenced(T0 + 3, 10), Vec::<AttachmentId>::new());
    s.reopen();
    assert!(s.referenced_in(chat, 1));

    // Every device of the direct chat received seq 1: retention removes it, and with it the
    // references of attachments 1 and 2.
    s.write(vec![delivered(chat, 1, 1, 1), delivered(chat, 2, 1, 1)]);
    s.sweep(T0 + 10);
    assert_eq!(s.state(chat).floor, 2);
    assert!(!s.referenced_in(chat, 1) && !s.referenced_in(chat, 2));
    assert_eq!(s.unreferenced(T0 + 100, 10), [id(1), id(2), id(4)]);
    assert_eq!(
        s.unreferenced(T0 + 100, 2),
        [id(1), id(2)],
        "at most `limit`"
    );

    s.write(vec![
        Mutation::DeleteAttachment(id(1)),
        Mutation::DeleteAttachment(id(3)),
    ]);
    assert_eq!(s.attachment(3), None);
    assert!(
        !s.referenced_in(other, 3),
        "a deleted attachment has no references"
    );
    s.reopen();
    assert_eq!(s.unreferenced(T0 + 100, 10), [id(2), id(4)]);
}
