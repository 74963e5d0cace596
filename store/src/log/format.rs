//! The on-disk format of the log: segment names, the segment header and the record frame.
//!
//! Owns only bytes: no files, no threads. Everything that reads or writes the log goes through
//! these functions, so the format is defined in one place.
//!
//! A log directory holds segment files named `log-<first LSN as 16 hex digits>.seg`. Each
//! segment starts with a [`HEADER_BYTES`]-byte header:
//!
//! | bytes  | field                                                     |
//! |--------|-----------------------------------------------------------|
//! | 0..8   | magic `SWBDLOG\0`                                         |
//! | 8..12  | format version, u32 LE ([`FORMAT_VERSION`])               |
//! | 12..16 | flags, u32 LE: bit 0 [`FLAG_PREPARED`]; zero in version 1 |
//! | 16..24 | first LSN of the segment, u64 LE (equals the file name's) |
//! | 24..28 | CRC-32C of bytes 0..24, u32 LE                            |
//! | 28..32 | reserved, zero                                            |
//!
//! Then records, back to back: `len: u32 LE`, `crc: u32 LE`, `payload: [u8; len]`, where `crc`
//! is CRC-32C over the four `len` bytes followed by the payload (so a damaged length is caught
//! too). A record's LSN is implicit: the segment's first LSN plus its index in the segment.
//!
//! The records end at the end of the file or at the first frame of eight zero bytes, after
//! which every byte is zero: version 2 segments may be *prepared*, zero-filled to their full
//! size before the first record is written (so that a sync overwrites blocks already on disk
//! instead of growing the file). A zero frame is never a record: an empty payload's CRC is not
//! zero. Version 1 segments (no prepared ones) are read by the same rules.
//!
//! Invariant: the version is checked before the header CRC, so a future version with a
//! different header layout is reported as [`HeaderError::Version`], not as corruption.

use super::Lsn;

/// The first eight bytes of every segment.
pub(crate) const MAGIC: [u8; 8] = *b"SWBDLOG\0";
/// The format version this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build reads. Version 1 differs only in never having
/// prepared segments, so it is read as is.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Header flag: the segment was prepared (zero-filled to its full size before its header was
/// written). A torn tail of a prepared segment is zeroed, not cut, to keep its size.
pub(crate) const FLAG_PREPARED: u32 = 1;
/// Bytes of the segment header.
pub(crate) const HEADER_BYTES: usize = 32;
/// Bytes of a record's frame before its payload (`len` and `crc`).
pub(crate) const RECORD_OVERHEAD_BYTES: usize = 8;

/// What is wrong with a segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Fewer than [`HEADER_BYTES`] bytes.
    Short,
    /// Not a log segment (or not one of ours).
    Magic,
    /// A version this build does not read.
    Version(u32),
    /// The header's checksum does not match.
    Checksum,
}

/// What is wrong with the record at some offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// Fewer than [`RECORD_OVERHEAD_BYTES`] bytes left.
    PartialFrame,
    /// The length is above the record limit.
    TooLong(u32),
    /// The payload runs past the end of the segment.
    PartialPayload,
    /// The checksum does not match.
    Checksum,
}

impl RecordError {
    /// A short description for error messages.
    pub(crate) fn describe(self) -> String {
        match self {
            Self::PartialFrame => "partial record frame".to_owned(),
            Self::TooLong(len) => format!("record length {len} above the record limit"),
            Self::PartialPayload => "partial record payload".to_owned(),
            Self::Checksum => "record checksum mismatch".to_owned(),
        }
    }
}

/// The file name of the segment whose first record has `first_lsn`.
pub(crate) fn segment_name(first_lsn: Lsn) -> String {
    format!("log-{first_lsn:016x}.seg")
}

/// The first LSN encoded in a segment file name, or `None` if `name` is not a segment's name.
pub(crate) fn parse_segment_name(name: &str) -> Option<Lsn> {
    let hex = name.strip_prefix("log-")?.strip_suffix(".seg")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// A segment header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The LSN of the segment's first record.
    pub(crate) first_lsn: Lsn,
    /// [`FLAG_PREPARED`] or zero.
    pub(crate) flags: u32,
}

/// The header of a segment whose first record has `first_lsn`.
pub(crate) fn encode_header(first_lsn: Lsn, flags: u32) -> [u8; HEADER_BYTES] {
    let mut header = [0_u8; HEADER_BYTES];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&flags.to_le_bytes());
    header[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..24]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Checks a segment header and returns its fields.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<Header, HeaderError> {
    let header = bytes.get(..HEADER_BYTES).ok_or(HeaderError::Short)?;
    if header[0..8] != MAGIC {
        return Err(HeaderError::Magic);
    }
    let version = u32::from_le_bytes(array(&header[8..12]));
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(HeaderError::Version(version));
    }
    let crc = u32::from_le_bytes(array(&header[24..28]));
    if crc != crc32c::crc32c(&header[0..24]) {
        return Err(HeaderError::Checksum);
    }
    Ok(Header {
        first_lsn: u64::from_le_bytes(array(&header[16..24])),
        flags: u32::from_le_bytes(array(&header[12..16])),
    })
}

/// Whether `bytes` starts with a zero frame: the end of a segment's records.
pub(crate) fn is_zero_frame(bytes: &[u8]) -> bool {
    bytes
        .get(..RECORD_OVERHEAD_BYTES)
        .is_some_and(|frame| frame.iter().all(|&b| b == 0))
}

/// Appends one framed record to `out`. The caller has checked `payload.len()` against the
/// record limit, which is far below `u32::MAX`.
pub(crate) fn encode_record(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("record length was checked against the limit");
    let len_bytes = len.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload);
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Bytes that [`encode_record`] writes for a payload of `payload_bytes`.
pub(crate) const fn framed_bytes(payload_bytes: usize) -> usize {
    RECORD_OVERHEAD_BYTES + payload_bytes
}

/// Decodes the record at the start of `bytes` (which must not be empty) and returns its payload
/// and its framed size.
pub(crate) fn decode_record(
    bytes: &[u8],
    record_bytes_max: usize,
) -> Result<(&[u8], usize), RecordError> {
    let frame = bytes
        .get(..RECORD_OVERHEAD_BYTES)
        .ok_or(RecordError::PartialFrame)?;
    let len = u32::from_le_bytes(array(&frame[0..4]));
    if len as usize > record_bytes_max {
        return Err(RecordError::TooLong(len));
    }
    let end = framed_bytes(len as usize);
    let payload = bytes
        .get(RECORD_OVERHEAD_BYTES..end)
        .ok_or(RecordError::PartialPayload)?;
    let crc = u32::from_le_bytes(array(&frame[4..8]));
    if crc != crc32c::crc32c_append(crc32c::crc32c(&frame[0..4]), payload) {
        return Err(RecordError::Checksum);
    }
    Ok((payload, end))
}

/// A four- or eight-byte array from a slice of exactly that length.
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    bytes.try_into().expect("callers slice exactly N bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_name(0x2a), "log-000000000000002a.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("log-2a.seg"), None);
        assert_eq!(parse_segment_name("log-000000000000002a.seg.tmp"), None);
        assert_eq!(parse_segment_name("log-00000000000000+a.seg"), None);
    }

    #[test]
    fn header_round_trips_and_checks_version_before_checksum() {
        let header = encode_header(77, FLAG_PREPARED);
        let fields = |first_lsn, flags| Ok(Header { first_lsn, flags });
        assert_eq!(decode_header(&header), fields(77, FLAG_PREPARED));
        assert_eq!(decode_header(&encode_header(78, 0)), fields(78, 0));
        assert_eq!(decode_header(&header[..31]), Err(HeaderError::Short));
        let mut future = header;
        future[8..12].copy_from_slice(&3_u32.to_le_bytes());
        assert_eq!(decode_header(&future), Err(HeaderError::Version(3)));
        let mut zero = header;
        zero[8..12].copy_from_slice(&0_u32.to_le_bytes());
        assert_eq!(decode_header(&zero), Err(HeaderError::Version(0)));
        let mut flipped = header;
        flipped[17] ^= 1;
        assert_eq!(decode_header(&flipped), Err(HeaderError::Checksum));
        let mut magic = header;
        magic[0] = b'X';
        assert_eq!(decode_header(&magic), Err(HeaderError::Magic));
    }

    #[test]
    fn version_1_headers_are_read() {
        let mut v1 = encode_header(5, 0);
        v1[8..12].copy_from_slice(&1_u32.to_le_bytes());
        let crc = crc32c::crc32c(&v1[0..24]);
        v1[24..28].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_header(&v1),
            Ok(Header {
                first_lsn: 5,
                flags: 0
            })
        );
    }

    #[test]
    fn a_zero_frame_is_never_a_record() {
        let mut empty = Vec::new();
        encode_record(&mut empty, b"");
        assert!(!is_zero_frame(&empty), "an empty record's CRC is not zero");
        assert!(is_zero_frame(&[0; 8]));
        assert!(!is_zero_frame(&[0; 7]), "fewer than a frame's bytes");
        assert_eq!(decode_record(&[0; 8], 64), Err(RecordError::Checksum));
    }

    #[test]
    fn records_round_trip_and_detect_damage() {
        let mut buf = Vec::new();
        encode_record(&mut buf, b"hello");
        encode_record(&mut buf, b"");
        assert_eq!(decode_record(&buf, 64), Ok((&b"hello"[..], 13)));
        assert_eq!(decode_record(&buf[13..], 64), Ok((&b""[..], 8)));
        assert_eq!(
            decode_record(&buf[..12], 64),
            Err(RecordError::PartialPayload)
        );
        assert_eq!(decode_record(&buf[..7], 64), Err(RecordError::PartialFrame));
        assert_eq!(decode_record(&buf, 4), Err(RecordError::TooLong(5)));
        let mut flipped = buf.clone();
        flipped[10] ^= 0x40;
        assert_eq!(decode_record(&flipped, 64), Err(RecordError::Checksum));
        let mut len_flipped = buf;
        len_flipped[0] = 4;
        assert_eq!(decode_record(&len_flipped, 64), Err(RecordError::Checksum));
    }

    proptest::proptest! {
        #[test]
        fn any_payload_round_trips(payload in proptest::collection::vec(0_u8.., 0..512)) {
            let mut buf = Vec::new();
            encode_record(&mut buf, &payload);
            proptest::prop_assert_eq!(decode_record(&buf, 512), Ok((&payload[..], buf.len())));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(0_u8.., 1..64)
        ) {
            let _ = decode_record(&bytes, 32);
            let _ = decode_header(&bytes);
        }
    }
}
