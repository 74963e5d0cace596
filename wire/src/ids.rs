//! Fixed-size identifiers: users, devices, chats, messages, attachments and blob digests.
//!
//! Owns the in-memory form of every id and the rules that make one valid. Each id is a
//! `#[repr(transparent)]` byte array with the exact layout of its FlatBuffers struct, so a decoded
//! vector of ids is borrowed straight out of the frame (`&[UserId]`) with no copy.
//!
//! Invariants:
//! - Numeric views are big-endian: byte order is numeric order, so ids sort correctly as keys.
//! - A `UserId` is in `1 ..= 2^63-1`; a `DeviceId`, `MessageId` and `AttachmentId` are nonzero.
//! - A direct `ChatId` is `hi = min(a, b), lo = max(a, b)` of its two users (top bit of `hi`
//!   clear); a group `ChatId` has the top bit of `hi` set. Both parties derive the same id.
//! - The decoder only hands out ids that passed [`Id::is_valid`]; constructors check too.

use bytemuck::{Pod, Zeroable};

/// The top bit of a chat id's first byte: set for groups, clear for direct chats.
const GROUP_BIT: u8 = 0x80;

/// What every id type can say about itself; used by the decoder to validate borrowed slices.
pub trait Id: Pod {
    /// Whether these bytes form a valid id of this type (see the module invariants).
    fn is_valid(&self) -> bool;
}

macro_rules! byte_id {
    ($(#[$doc:meta])* $name:ident, $len:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
        #[repr(transparent)]
        pub struct $name([u8; $len]);

        impl $name {
            /// The id's size on the wire, in bytes.
            pub const SIZE: usize = $len;

            /// The raw bytes, as on the wire.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Builds the id from raw wire bytes, if they form a valid id.
            pub fn from_bytes(bytes: [u8; $len]) -> Option<Self> {
                let id = Self(bytes);
                id.is_valid().then_some(id)
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, concat!(stringify!($name), "("))?;
                for b in &self.0 {
                    write!(f, "{b:02x}")?;
                }
                write!(f, ")")
            }
        }
    };
}

byte_id!(
    /// A user: `1 ..= 2^63-1` (the top bit is reserved so a direct chat id holds two users).
    UserId,
    8
);
byte_id!(
    /// One device of a user (the token's `dev` claim); nonzero.
    DeviceId,
    8
);
byte_id!(
    /// A chat: direct (derived from its two users) or group (top bit set, assigned by the server).
    ChatId,
    16
);
byte_id!(
    /// A stored message, unique across the fleet; nonzero.
    MessageId,
    16
);
byte_id!(
    /// An uploaded blob; nonzero.
    AttachmentId,
    16
);
byte_id!(
    /// The SHA-256 digest of a blob; any 32 bytes.
    Sha256,
    32
);

impl UserId {
    /// The largest valid user id.
    pub const MAX: u64 = (1 << 63) - 1;

    /// A user id, if `id` is in `1 ..= UserId::MAX`.
    pub fn new(id: u64) -> Option<Self> {
        Self::from_bytes(id.to_be_bytes())
    }

    /// The numeric id.
    pub fn get(self) -> u64 {
        u64::from_be_bytes(self.0)
    }
}

impl Id for UserId {
    fn is_valid(&self) -> bool {
        self.0[0] & GROUP_BIT == 0 && self.0 != [0; 8]
    }
}

impl DeviceId {
    /// A device id, if `id` is nonzero.
    pub fn new(id: u64) -> Option<Self> {
        Self::from_bytes(id.to_be_bytes())
    }

    /// The numeric id.
    pub fn get(self) -> u64 {
        u64::from_be_bytes(self.0)
    }
}

/// Whether a chat is a direct (two-user) chat or a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatKind {
    /// Two users; the id is derived from them, so the first send creates the chat.
    Direct,
    /// Created with `CreateChat`; the id is assigned by the server.
    Group,
}

impl ChatId {
    /// The direct chat of users `a` and `b` (order does not matter; `a == b` is a note to self).
    pub fn direct(a: UserId, b: UserId) -> Self {
        // The schema's `hi` half holds the smaller user, `lo` the larger.
        let (smaller, larger) = if a <= b { (a, b) } else { (b, a) };
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&smaller.0);
        bytes[8..].copy_from_slice(&larger.0);
        Self(bytes)
    }

    /// A group chat id from 128 bits chosen by the server; the group bit is forced on.
    pub fn group(raw: u128) -> Self {
        let mut bytes = raw.to_be_bytes();
        bytes[0] |= GROUP_BIT;
        Self(bytes)
    }

    /// Direct or group.
    pub fn kind(self) -> ChatKind {
        if self.0[0] & GROUP_BIT == 0 {
            ChatKind::Direct
        } else {
            ChatKind::Group
        }
    }

    /// The two users of a direct chat (smaller id first); `None` for a group.
    pub fn direct_users(self) -> Option<(UserId, UserId)> {
        let (a, b) = self.halves();
        (self.kind() == ChatKind::Direct).then_some((UserId(a), UserId(b)))
    }

    /// The numeric id.
    pub fn get(self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    fn halves(self) -> ([u8; 8], [u8; 8]) {
        let mut a = [0; 8];
        let mut b = [0; 8];
        a.copy_from_slice(&self.0[..8]);
        b.copy_from_slice(&self.0[8..]);
        (a, b)
    }
}

impl Id for ChatId {
    fn is_valid(&self) -> bool {
        match self.kind() {
            ChatKind::Group => true,
            ChatKind::Direct => {
                let (a, b) = self.halves();
                let (a, b) = (UserId(a), UserId(b));
                a.is_valid() && b.is_valid() && a <= b
            }
        }
    }
}

macro_rules! nonzero_u128_id {
    ($name:ident) => {
        impl $name {
            /// The id, if `id` is nonzero.
            pub fn new(id: u128) -> Option<Self> {
                Self::from_bytes(id.to_be_bytes())
            }

            /// The numeric id.
            pub fn get(self) -> u128 {
                u128::from_be_bytes(self.0)
            }
        }
    };
}
nonzero_u128_id!(MessageId);
nonzero_u128_id!(AttachmentId);

macro_rules! nonzero_valid {
    ($($name:ident),*) => {$(
        impl Id for $name {
            fn is_valid(&self) -> bool {
                self.0.iter().any(|&b| b != 0)
            }
        }
    )*};
}
nonzero_valid!(DeviceId, MessageId, AttachmentId);

impl Sha256 {
    /// A digest from its 32 bytes.
    pub const fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl Id for Sha256 {
    fn is_valid(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: u64) -> UserId {
        UserId::new(id).expect("valid test user")
    }

    #[test]
    fn user_ids_reject_zero_and_the_reserved_bit() {
        assert!(UserId::new(0).is_none());
        assert!(UserId::new(1 << 63).is_none());
        assert!(UserId::new(u64::MAX).is_none());
        assert_eq!(user(UserId::MAX).get(), UserId::MAX);
        assert_eq!(user(1).get(), 1);
    }

    #[test]
    fn direct_chat_ids_are_symmetric_and_reversible() {
        let (a, b) = (user(7), user(3));
        let chat = ChatId::direct(a, b);
        assert_eq!(chat, ChatId::direct(b, a));
        assert_eq!(chat.kind(), ChatKind::Direct);
        assert_eq!(chat.direct_users(), Some((b, a)));
        assert!(chat.is_valid());
        assert!(
            ChatId::direct(a, a).is_valid(),
            "a note to self is a direct chat"
        );
    }

    #[test]
    fn group_ids_never_collide_with_direct_ids() {
        let g = ChatId::group(0);
        assert_eq!(g.kind(), ChatKind::Group);
        assert!(g.direct_users().is_none());
        assert!(g.is_valid());
        assert_ne!(
            ChatId::group(u128::from(user(5).get())),
            ChatId::direct(user(5), user(5))
        );
    }

    #[test]
    fn malformed_direct_ids_are_invalid() {
        // Users out of order, a zero user, and a zero id are not ids any client derives.
        let mut swapped = [0u8; 16];
        swapped[7] = 9;
        swapped[15] = 2;
        assert!(ChatId::from_bytes(swapped).is_none());
        assert!(ChatId::from_bytes([0; 16]).is_none());
        let mut zero_lo = [0u8; 16];
        zero_lo[7] = 1;
        assert!(ChatId::from_bytes(zero_lo).is_none());
    }

    #[test]
    fn numeric_views_are_big_endian() {
        assert_eq!(user(0x0102).as_bytes(), &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert!(user(1) < user(256), "byte order is numeric order");
        assert!(MessageId::new(0).is_none());
        assert_eq!(AttachmentId::new(42).map(AttachmentId::get), Some(42));
        assert_eq!(DeviceId::new(9).map(DeviceId::get), Some(9));
    }
}
