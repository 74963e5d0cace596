//! Every limit of the protocol and the service, in one place, with the defaults of DESIGN.md §1.
//!
//! Owns the numbers; enforces nothing by itself. The decoder enforces the per-frame limits where
//! input enters; the gateway, router and store read the rest from the same struct so there is one
//! source of truth. Names end with their unit (`_bytes_max`, `_ms`, `_days`).
//!
//! Invariant: a `Limits` that passed [`Limits::validate`] is self-consistent: every frame a client
//! may legally send fits in `frame_bytes_max`, and no value exceeds its documented ceiling.

/// Largest body any configuration may allow (DESIGN.md F3: "configurable up to 64 KiB").
pub const BODY_BYTES_CEILING: usize = 64 * 1024;
/// Longest offline retention any configuration may set (DESIGN.md F6: up to 1 year).
pub const OFFLINE_TTL_DAYS_CEILING: u32 = 365;
/// Longest server history any configuration may set (DESIGN.md F7: up to 90 days).
pub const HISTORY_TTL_DAYS_CEILING: u32 = 90;
/// Room in a frame for everything but the body and attachment ids (envelope, ids, vtables).
const FRAME_OVERHEAD_BYTES: usize = 512;

/// All limits. `Limits::default()` is DESIGN.md §1.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct Limits {
    /// Largest WebSocket message (reassembled) in either direction; bigger → close 1009.
    pub frame_bytes_max: usize,
    /// Largest message body in bytes (any kind).
    pub body_bytes_max: usize,
    /// Most characters (Unicode scalar values) in a `Text` body.
    pub body_chars_max: usize,
    /// Most attachments on one message.
    pub attachments_per_message_max: usize,
    /// Most members of a group chat, admins included.
    pub group_members_max: usize,
    /// Longest group name, in bytes of UTF-8.
    pub chat_name_bytes_max: usize,
    /// Longest MIME type on `CreateAttachment`.
    pub mime_bytes_max: usize,
    /// Largest blob `CreateAttachment` may declare.
    pub attachment_bytes_max: u64,
    /// Most users in one `SubscribePresence`.
    pub presence_subscriptions_max: usize,
    /// Most messages in one `HistoryPage`.
    pub history_page_messages_max: usize,
    /// Most devices per user (a further device is refused at connect).
    pub devices_per_user_max: usize,
    /// FlatBuffers verifier: deepest nesting of tables.
    pub verify_depth_max: usize,
    /// FlatBuffers verifier: most tables in one frame.
    pub verify_tables_max: usize,
    /// Shortest interval between `Typing` notices per user per chat.
    pub typing_interval_ms: u32,
    /// Send rate limit per device: bucket size.
    pub send_burst: u32,
    /// Send rate limit per device: refill per second.
    pub send_per_s: u32,
    /// Send rate limit per user (all devices together): bucket size.
    pub user_send_burst: u32,
    /// Send rate limit per user (all devices together): refill per second.
    pub user_send_per_s: u32,
    /// Chat changes per user (`CreateChat` and `ModifyParticipants`): bucket size.
    pub create_burst: u32,
    /// Chat changes per user: refill per minute.
    pub create_per_min: u32,
    /// `CreateAttachment` per user: bucket size.
    pub upload_burst: u32,
    /// `CreateAttachment` per user: refill per minute.
    pub upload_per_min: u32,
    /// Shortest interval between two pushes to one offline device.
    pub push_interval_ms: u32,
    /// How long an undelivered message is kept.
    pub offline_ttl_days: u32,
    /// How long a message is kept in a chat with history on.
    pub history_ttl_days: u32,
    /// How long a pre-signed upload or download URL stays valid.
    pub url_ttl_s: u32,
    /// A device unseen this long is pruned (its cursors and its slot in the device limit).
    pub device_prune_days: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            frame_bytes_max: 64 * 1024,
            body_bytes_max: 4 * 1024,
            body_chars_max: 1_000,
            attachments_per_message_max: 10,
            group_members_max: 1_024,
            chat_name_bytes_max: 256,
            mime_bytes_max: 255,
            attachment_bytes_max: 100 * 1024 * 1024,
            presence_subscriptions_max: 1_024,
            history_page_messages_max: 100,
            devices_per_user_max: 4,
            // ServerFrame → RequestResult → HistoryPage → NewMessage is the deepest legal frame.
            verify_depth_max: 8,
            // A full history page: 3 envelope tables plus one per message, with headroom.
            verify_tables_max: 256,
            typing_interval_ms: 3_000,
            send_burst: 60,
            send_per_s: 10,
            // A user's devices together may send twice what one device may.
            user_send_burst: 120,
            user_send_per_s: 20,
            create_burst: 20,
            create_per_min: 60,
            upload_burst: 30,
            upload_per_min: 120,
            push_interval_ms: 10_000,
            offline_ttl_days: 30,
            history_ttl_days: 90,
            url_ttl_s: 15 * 60,
            device_prune_days: 30,
        }
    }
}

/// A limit that is out of range, named by its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit `{field}` {reason}")]
pub struct LimitsError {
    /// The offending field of [`Limits`].
    pub field: &'static str,
    /// Why it is refused.
    pub reason: String,
}

impl Limits {
    /// Checks every limit against its ceiling and against the others.
    ///
    /// # Errors
    /// The first field that is out of range, with the reason.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let fail = |field, reason: String| Err(LimitsError { field, reason });
        let nonzero = [
            ("frame_bytes_max", self.frame_bytes_max),
            ("body_bytes_max", self.body_bytes_max),
            ("body_chars_max", self.body_chars_max),
            ("group_members_max", self.group_members_max),
            ("history_page_messages_max", self.history_page_messages_max),
            ("devices_per_user_max", self.devices_per_user_max),
            ("mime_bytes_max", self.mime_bytes_max),
            (
                "attachment_bytes_max",
                usize::try_from(self.attachment_bytes_max).unwrap_or(usize::MAX),
            ),
            ("device_prune_days", self.device_prune_days as usize),
            ("verify_depth_max", self.verify_depth_max),
            ("verify_tables_max", self.verify_tables_max),
            ("send_burst", self.send_burst as usize),
            ("send_per_s", self.send_per_s as usize),
            ("user_send_burst", self.user_send_burst as usize),
            ("user_send_per_s", self.user_send_per_s as usize),
            ("create_burst", self.create_burst as usize),
            ("create_per_min", self.create_per_min as usize),
            ("upload_burst", self.upload_burst as usize),
            ("upload_per_min", self.upload_per_min as usize),
            ("offline_ttl_days", self.offline_ttl_days as usize),
            ("url_ttl_s", self.url_ttl_s as usize),
        ];
        if let Some((field, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return fail(field, "must be at least 1".into());
        }
        if self.body_bytes_max > BODY_BYTES_CEILING {
            return fail(
                "body_bytes_max",
                format!("must be at most {BODY_BYTES_CEILING}"),
            );
        }
        if self.offline_ttl_days > OFFLINE_TTL_DAYS_CEILING {
            return fail(
                "offline_ttl_days",
                format!("must be at most {OFFLINE_TTL_DAYS_CEILING}"),
            );
        }
        if self.history_ttl_days > HISTORY_TTL_DAYS_CEILING {
            return fail(
                "history_ttl_days",
                format!("must be at most {HISTORY_TTL_DAYS_CEILING}"),
            );
        }
        let largest_send = self.body_bytes_max
            + self.attachments_per_message_max * crate::AttachmentId::SIZE
            + FRAME_OVERHEAD_BYTES;
        if self.frame_bytes_max < largest_send {
            return fail(
                "frame_bytes_max",
                format!("must be at least {largest_send} to carry the largest allowed message"),
            );
        }
        // A `ChatUpdate{Created}` lists every member with a role: the largest member list.
        let member_bytes = core::mem::size_of::<crate::Member>();
        let largest_group = self.group_members_max * member_bytes + FRAME_OVERHEAD_BYTES;
        if self.frame_bytes_max < largest_group {
            return fail(
                "frame_bytes_max",
                format!("must be at least {largest_group} to carry a full group's member list"),
            );
        }
        if self.verify_tables_max < self.history_page_messages_max + 3 {
            return fail(
                "verify_tables_max",
                "must exceed history_page_messages_max + 3".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_design_md_and_valid() {
        let l = Limits::default();
        assert_eq!(l.validate(), Ok(()));
        assert_eq!((l.body_chars_max, l.body_bytes_max), (1_000, 4_096));
        assert_eq!(
            (l.group_members_max, l.attachments_per_message_max),
            (1_024, 10)
        );
        assert_eq!((l.devices_per_user_max, l.typing_interval_ms), (4, 3_000));
        assert_eq!(
            (l.send_burst, l.send_per_s, l.offline_ttl_days),
            (60, 10, 30)
        );
        assert_eq!((l.attachment_bytes_max, l.url_ttl_s), (100 << 20, 900));
    }

    #[test]
    fn out_of_range_limits_name_their_field() {
        let over = Limits {
            body_bytes_max: BODY_BYTES_CEILING + 1,
            ..Limits::default()
        };
        assert_eq!(over.validate().map_err(|e| e.field), Err("body_bytes_max"));
        let zero = Limits {
            send_per_s: 0,
            ..Limits::default()
        };
        assert_eq!(zero.validate().map_err(|e| e.field), Err("send_per_s"));
        let year = Limits {
            offline_ttl_days: 366,
            ..Limits::default()
        };
        assert_eq!(
            year.validate().map_err(|e| e.field),
            Err("offline_ttl_days")
        );
        let hist = Limits {
            history_ttl_days: 91,
            ..Limits::default()
        };
        assert_eq!(
            hist.validate().map_err(|e| e.field),
            Err("history_ttl_days")
        );
    }

    #[test]
    fn a_bigger_body_needs_a_bigger_frame() {
        let big_body = Limits {
            body_bytes_max: BODY_BYTES_CEILING,
            ..Limits::default()
        };
        assert_eq!(
            big_body.validate().map_err(|e| e.field),
            Err("frame_bytes_max")
        );
        let fixed = Limits {
            frame_bytes_max: 80 * 1024,
            ..big_body
        };
        assert_eq!(fixed.validate(), Ok(()));
    }
}
