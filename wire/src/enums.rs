//! The protocol's enumerations as exhaustive Rust enums, with the wire value of each.
//!
//! Owns the mapping between each enum and the raw number FlatBuffers carries. The generated
//! types accept any number; these accept only known values, so `match` is exhaustive and an
//! unknown value is caught once, at decode time. A test checks every name and number against
//! the generated code, so the schema and this file cannot drift apart.

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident: $raw:ty { $($(#[$vdoc:meta])* $variant:ident = $value:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr($raw)]
        pub enum $name {
            $($(#[$vdoc])* $variant = $value,)*
        }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The value for a raw wire number, if it is a known one.
            pub const fn from_raw(raw: $raw) -> Option<Self> {
                match raw {
                    $($value => Some(Self::$variant),)*
                    _ => None,
                }
            }

            /// The raw wire number.
            pub const fn raw(self) -> $raw {
                self as $raw
            }

            /// The name as written in the schema and docs/PROTOCOL.md.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant),)*
                }
            }
        }
    };
}

wire_enum!(
    /// The outcome of a request, carried by every `Result`. docs/PROTOCOL.md lists when each is
    /// used; clients treat an unknown code like `Internal`.
    ErrorCode: u16 {
        /// Success; the payload (if any) is set.
        Ok = 0,
        /// The bytes are not a valid `ClientFrame`, or a required field is missing.
        Malformed = 1,
        /// A valid frame this server does not handle (yet), or an unknown enum/union value.
        Unsupported = 2,
        /// A field is out of its range (zero id, zero `client_msg_id`, empty message, bad UTF-8…).
        InvalidArgument = 3,
        /// The body is over `body_bytes_max` bytes or `body_chars_max` characters.
        BodyTooLong = 4,
        /// More than `attachments_per_message_max` attachments.
        TooManyAttachments = 5,
        /// A member list in one request is over `group_members_max` (for `CreateChat`, counting the
        /// creator), or a presence list over `presence_subscriptions_max`.
        TooManyMembers = 6,
        /// A group name over `chat_name_bytes_max`, or a MIME type over `mime_bytes_max`.
        NameTooLong = 7,
        /// The chat (or history page) does not exist.
        NotFound = 8,
        /// The requester is not a member of the chat.
        NotMember = 9,
        /// Only an admin may do that.
        NotAdmin = 10,
        /// The change would take the group over `group_members_max`.
        GroupFull = 11,
        /// Not allowed, with no further detail (e.g. an attachment URL for a non-member: the same
        /// answer whether or not the attachment exists).
        Forbidden = 12,
        /// The user already has `devices_per_user_max` devices.
        TooManyDevices = 13,
        /// The declared blob size is over `attachment_bytes_max`.
        AttachmentTooLarge = 14,
        /// The attachment has not been uploaded and verified, or belongs to another device.
        AttachmentNotReady = 15,
        /// `FetchHistory` on a chat without server history.
        HistoryDisabled = 16,
        /// Over a rate limit; `retry_after_ms` says when to try again.
        RateLimited = 17,
        /// A dependency (the store) is unavailable; nothing was done; retry later.
        Unavailable = 18,
        /// A bug on the server; nothing was done.
        Internal = 19,
    }
);

wire_enum!(
    /// A member's role in a group.
    Role: u8 {
        /// May send and leave.
        Member = 0,
        /// May also add, remove and promote.
        Admin = 1,
    }
);

wire_enum!(
    /// How the server may look at a body.
    BodyKind: u8 {
        /// UTF-8 text, limited in characters and bytes.
        Text = 0,
        /// Opaque bytes (e.g. end-to-end encrypted), limited in bytes only.
        Opaque = 1,
    }
);

wire_enum!(
    /// Which check mark a receipt is.
    ReceiptKind: u8 {
        /// Received by the device (✓✓).
        Delivered = 0,
        /// Read by the user (blue ✓✓).
        Read = 1,
    }
);

wire_enum!(
    /// What a `ChatUpdate` changed.
    ChatUpdateKind: u8 {
        /// The chat was created; `members` is everyone, with roles.
        Created = 0,
        /// `members` were added.
        MembersAdded = 1,
        /// `members` were removed by an admin.
        MembersRemoved = 2,
        /// `members` became admins.
        MembersPromoted = 3,
        /// The actor left.
        MemberLeft = 4,
    }
);

impl ErrorCode {
    /// Whether this is a success.
    pub const fn is_ok(self) -> bool {
        matches!(self, Self::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fb;

    /// Each domain enum has exactly the generated enum's names and numbers.
    macro_rules! assert_mirrors {
        ($ours:ident, $gen:path) => {{
            use $gen as Gen;
            assert_eq!($ours::ALL.len(), Gen::ENUM_VALUES.len(), stringify!($ours));
            for (ours, theirs) in $ours::ALL.iter().zip(Gen::ENUM_VALUES) {
                assert_eq!(ours.raw(), theirs.0, "{} number", ours.name());
                assert_eq!(
                    Some(ours.name()),
                    theirs.variant_name(),
                    "{} name",
                    ours.name()
                );
                assert_eq!($ours::from_raw(theirs.0), Some(*ours));
            }
        }};
    }

    #[test]
    fn enums_mirror_the_schema() {
        assert_mirrors!(ErrorCode, fb::ErrorCode);
        assert_mirrors!(Role, fb::Role);
        assert_mirrors!(BodyKind, fb::BodyKind);
        assert_mirrors!(ReceiptKind, fb::ReceiptKind);
        assert_mirrors!(ChatUpdateKind, fb::ChatUpdateKind);
        assert_eq!(ErrorCode::from_raw(999), None);
    }
}
