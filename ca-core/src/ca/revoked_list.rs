//! The revoked-entry list of one issuer's CRL, kept encoded between CRLs.
//!
//! A CRL of a million entries is ~45 MB of entries and a few hundred bytes of
//! headers. Re-reading and re-encoding every entry for each revocation cost
//! ~0.9 s; instead the publisher keeps the entries as DER, sorted by serial,
//! in chunks of at most [`CHUNK_ENTRIES`], and patches them: an entry revoked
//! since the last CRL is encoded once and spliced into its chunk, an entry
//! whose certificate expired is cut out of its chunk. Publishing is then
//! "read the revocations of the revisions since the last CRL, patch, copy
//! the chunks behind the headers, sign".
//!
//! The bytes are those a full build writes ([`push_entry`] encodes both),
//! for the same set: every revoked certificate of the issuer whose notAfter
//! is after the CRL's thisUpdate. The list is rebuilt from the store when it
//! cannot be patched (see `Ca::publish_crl_for`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use time::OffsetDateTime;

use crate::ids::Serial;
use crate::pki::crl::{ends_piece, push_entry, CrlBuilder, RevokedEntry};

/// Most entries in one chunk: a patch moves at most this many entries'
/// bytes (~25 KB). A full chunk splits in two.
pub(crate) const CHUNK_ENTRIES: usize = 512;

/// Entries a full build puts in each chunk: room for inserts before a split.
const FILL_ENTRIES: usize = CHUNK_ENTRIES * 3 / 4;

/// Most entries kept (~90 bytes each in memory, so ~450 MB). A longer list
/// is not kept: each CRL is then built from the store, as `ca-cli crl` does.
pub(crate) const MAX_KEPT_ENTRIES: usize = 5_000_000;

/// Consecutive entries in serial order, encoded back to back.
#[derive(Debug, Default)]
struct Chunk {
    serials: Vec<Serial>,
    /// End of entry `i` in `der`.
    ends: Vec<u32>,
    der: Vec<u8>,
}

impl Chunk {
    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1] as usize
        }
    }

    fn push(&mut self, serial: Serial, encoded: &[u8]) {
        self.der.extend_from_slice(encoded);
        self.serials.push(serial);
        self.ends.push(self.der.len() as u32);
    }

    fn insert(&mut self, i: usize, serial: Serial, encoded: &[u8]) {
        let at = self.start(i);
        self.der.splice(at..at, encoded.iter().copied());
        self.serials.insert(i, serial);
        self.ends.insert(i, at as u32);
        let grown = encoded.len() as u32;
        for end in &mut self.ends[i..] {
            *end += grown;
        }
    }

    fn remove(&mut self, i: usize) {
        let (start, end) = (self.start(i), self.ends[i] as usize);
        self.der.drain(start..end);
        self.serials.remove(i);
        self.ends.remove(i);
        let shrunk = (end - start) as u32;
        for end in &mut self.ends[i..] {
            *end -= shrunk;
        }
    }

    /// Moves the upper half into a new chunk.
    fn split(&mut self) -> Chunk {
        let half = self.serials.len() / 2;
        let cut = self.start(half);
        let upper = Chunk {
            serials: self.serials.split_off(half),
            ends: self
                .ends
                .split_off(half)
                .iter()
                .map(|e| e - cut as u32)
                .collect(),
            der: self.der.split_off(cut),
        };
        self.der.shrink_to(self.der.len() * 2);
        upper
    }
}

/// One issuer's revoked entries, encoded, as of one CRL revision.
#[derive(Debug)]
pub(crate) struct RevokedList {
    /// Every revocation of a revision up to this one is in the list.
    revision: u64,
    /// Non-empty chunks, in serial order.
    chunks: Vec<Chunk>,
    /// (notAfter, serial) of every entry, soonest first.
    expiry: BinaryHeap<Reverse<(i64, Serial)>>,
    entries: usize,
    bytes: usize,
    scratch: Vec<u8>,
    encoded: Vec<u8>,
}

impl RevokedList {
    /// An empty list at `revision`.
    pub(crate) fn new(revision: u64) -> Self {
        RevokedList {
            revision,
            chunks: Vec::new(),
            expiry: BinaryHeap::new(),
            entries: 0,
            bytes: 0,
            scratch: Vec::with_capacity(96),
            encoded: Vec::with_capacity(96),
        }
    }

    /// The revision the list reflects.
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// Marks the list as reflecting `revision` (after its window was applied).
    pub(crate) fn set_revision(&mut self, revision: u64) {
        self.revision = revision;
    }

    /// Entries listed.
    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    /// True when nothing is listed.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Bytes of encoded entries.
    #[cfg(test)]
    pub(crate) fn encoded_len(&self) -> usize {
        self.bytes
    }

    /// Chunks the entries are kept in.
    #[cfg(test)]
    pub(crate) fn chunks(&self) -> usize {
        self.chunks.len()
    }

    /// The most entries in one chunk.
    #[cfg(test)]
    pub(crate) fn largest_chunk(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.serials.len())
            .max()
            .unwrap_or(0)
    }

    fn encode(&mut self, entry: &RevokedEntry) {
        self.encoded.clear();
        push_entry(&mut self.encoded, &mut self.scratch, entry);
    }

    /// Appends an entry whose serial is above every listed one (a full build
    /// from the store, which reads in serial order). Returns false, listing
    /// nothing, when it is out of order.
    pub(crate) fn push_sorted(&mut self, entry: &RevokedEntry, not_after: OffsetDateTime) -> bool {
        let last = self.chunks.last().and_then(|c| c.serials.last());
        if last.is_some_and(|last| *last >= entry.serial) {
            return false;
        }
        self.encode(entry);
        if self
            .chunks
            .last()
            .is_none_or(|c| c.serials.len() >= FILL_ENTRIES)
        {
            self.chunks.push(Chunk::default());
        }
        let chunk = self.chunks.last_mut().expect("a chunk was just pushed");
        chunk.push(entry.serial, &self.encoded);
        self.listed(entry.serial, not_after);
        true
    }

    fn listed(&mut self, serial: Serial, not_after: OffsetDateTime) {
        self.expiry
            .push(Reverse((not_after.unix_timestamp(), serial)));
        self.entries += 1;
        self.bytes += self.encoded.len();
    }

    /// The chunk that holds or would hold `serial`.
    fn chunk_for(&self, serial: &Serial) -> usize {
        self.chunks
            .partition_point(|c| c.serials[0] <= *serial)
            .saturating_sub(1)
    }

    /// True when `serial` is listed.
    #[cfg(test)]
    pub(crate) fn contains(&self, serial: &Serial) -> bool {
        let Some(chunk) = self.chunks.get(self.chunk_for(serial)) else {
            return false;
        };
        chunk.serials.binary_search(serial).is_ok()
    }

    /// Lists an entry (in its place by serial). Returns false when its
    /// serial is already listed: a revocation is never changed, so the
    /// listed entry is the same one.
    pub(crate) fn insert(&mut self, entry: &RevokedEntry, not_after: OffsetDateTime) -> bool {
        if self.chunks.is_empty() {
            return self.push_sorted(entry, not_after);
        }
        let c = self.chunk_for(&entry.serial);
        let Err(i) = self.chunks[c].serials.binary_search(&entry.serial) else {
            return false;
        };
        self.encode(entry);
        let chunk = &mut self.chunks[c];
        chunk.insert(i, entry.serial, &self.encoded);
        if chunk.serials.len() > CHUNK_ENTRIES {
            let upper = chunk.split();
            self.chunks.insert(c + 1, upper);
        }
        self.listed(entry.serial, not_after);
        true
    }

    /// Takes `serial` off the list; false when it was not listed.
    pub(crate) fn remove(&mut self, serial: &Serial) -> bool {
        let c = self.chunk_for(serial);
        let Some(chunk) = self.chunks.get_mut(c) else {
            return false;
        };
        let Ok(i) = chunk.serials.binary_search(serial) else {
            return false;
        };
        let before = chunk.der.len();
        chunk.remove(i);
        self.bytes -= before - chunk.der.len();
        self.entries -= 1;
        if chunk.serials.is_empty() {
            self.chunks.remove(c);
        }
        true
    }

    /// Takes off every entry whose certificate's notAfter is at or before
    /// `now` (a CRL with thisUpdate `now` lists only unexpired ones);
    /// returns how many.
    pub(crate) fn expire(&mut self, now: OffsetDateTime) -> usize {
        let now = now.unix_timestamp();
        let mut removed = 0;
        while let Some(Reverse((not_after, serial))) = self.expiry.peek().copied() {
            if not_after > now {
                break;
            }
            self.expiry.pop();
            removed += usize::from(self.remove(&serial));
        }
        removed
    }

    /// Hands the entries, in serial order, to a CRL being written, with
    /// where its stored pieces end (as [`CrlBuilder::push`] marks them).
    pub(crate) fn write_into(&self, builder: &mut CrlBuilder) {
        builder.reserve(self.bytes);
        for chunk in &self.chunks {
            let base = builder.entries_len();
            builder.push_encoded(&chunk.der, chunk.serials.len());
            for (serial, end) in chunk.serials.iter().zip(&chunk.ends) {
                if ends_piece(serial) {
                    builder.end_piece_at(base + *end as usize);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyAlgorithm;
    use crate::pki::crl::CrlPiece;
    use crate::pki::x509::CaCertificate;
    use crate::reason::RevocationReason;
    use crate::signer::FileSigner;
    use std::collections::BTreeMap;
    use time::Duration;

    fn serial(rng: &mut u64) -> Serial {
        // xorshift: repeatable, and enough to scatter serials.
        let mut bytes = [0u8; 16];
        for b in bytes.iter_mut() {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            *b = *rng as u8;
        }
        bytes[0] = (bytes[0] & 0x7f) | 0x01;
        Serial::from_bytes(&bytes).unwrap()
    }

    fn entry(rng: &mut u64, now: OffsetDateTime, i: i64) -> (RevokedEntry, OffsetDateTime) {
        let entry = RevokedEntry {
            serial: serial(rng),
            revoked_at: now - Duration::minutes(i % 5000),
            reason: RevocationReason::ALL[i as usize % RevocationReason::ALL.len()],
            invalidity_date: (i % 3 == 0).then(|| now - Duration::days(1 + i % 4)),
        };
        // Some expire within the test's clock, some long after.
        let not_after = now + Duration::seconds(1 + *rng as i64 % 200);
        (entry, not_after)
    }

    /// A list built from scratch (as from the store) of `set` at `now`.
    fn full(
        set: &BTreeMap<Serial, (RevokedEntry, OffsetDateTime)>,
        now: OffsetDateTime,
    ) -> RevokedList {
        let mut list = RevokedList::new(0);
        for (entry, not_after) in set.values() {
            if *not_after > now {
                assert!(list.push_sorted(entry, *not_after));
            }
        }
        list
    }

    fn crl(
        list: &RevokedList,
        ca: &CaCertificate,
        signer: &FileSigner,
        at: OffsetDateTime,
    ) -> (Vec<u8>, Vec<CrlPiece>) {
        let mut builder = CrlBuilder::new(ca, signer, 7, at, at + Duration::hours(24)).unwrap();
        list.write_into(&mut builder);
        let (der, pieces) = builder.finish_in_pieces(signer).unwrap();
        (der.0, pieces)
    }

    /// The CRL of `set` at `at` built entry by entry, as `ca-cli crl` does.
    fn crl_by_push(
        set: &BTreeMap<Serial, (RevokedEntry, OffsetDateTime)>,
        ca: &CaCertificate,
        signer: &FileSigner,
        at: OffsetDateTime,
    ) -> (Vec<u8>, Vec<CrlPiece>) {
        let mut builder = CrlBuilder::new(ca, signer, 7, at, at + Duration::hours(24)).unwrap();
        for (entry, not_after) in set.values() {
            if *not_after > at {
                builder.push(entry);
            }
        }
        let (der, pieces) = builder.finish_in_pieces(signer).unwrap();
        (der.0, pieces)
    }

    fn openssl_text(der: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crl.der");
        std::fs::write(&path, der).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn a_patched_list_gives_the_crl_a_full_build_gives() {
        // RSA PKCS#1 v1.5 signatures are deterministic: equal TBS, equal bytes.
        let (der, signer) = crate::pki::x509::test_certificate(
            KeyAlgorithm::Rsa2048.generate().unwrap(),
            "CN=Test CA,O=Example,C=DE",
        );
        let ca = CaCertificate::from_der(der.0).unwrap();
        let start = crate::now();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut set = BTreeMap::new();
        for i in 0..3000 {
            let (e, na) = entry(&mut rng, start, i);
            set.insert(e.serial, (e, na));
        }
        let mut kept = full(&set, start);
        let mut i = 3000;
        for round in 1..=40i64 {
            // Time moves (entries expire), and revocations arrive, some of
            // them already listed (a window read twice) or already expired.
            let now = start + Duration::seconds(round * 5);
            for _ in 0..(round * 7 % 50) {
                let (e, na) = entry(&mut rng, now, i);
                i += 1;
                set.insert(e.serial, (e.clone(), na));
                if na > now {
                    assert!(kept.insert(&e, na));
                }
            }
            let again = set.values().nth(round as usize * 13).cloned().unwrap();
            if again.1 > now {
                assert!(!kept.insert(&again.0, again.1));
            }
            kept.expire(now);
            let rebuilt = full(&set, now);
            assert_eq!(kept.len(), rebuilt.len(), "round {round}");
            assert_eq!(kept.encoded_len(), rebuilt.encoded_len());
            assert!(kept.largest_chunk() <= CHUNK_ENTRIES);
            if round % 8 == 0 || round == 1 {
                let ((a, a_pieces), (b, b_pieces)) = (
                    crl(&kept, &ca, &signer, now),
                    crl(&rebuilt, &ca, &signer, now),
                );
                assert_eq!(
                    a, b,
                    "round {round}: the patched CRL differs from a full build"
                );
                // Stored in the same pieces, however it was built.
                assert_eq!(a_pieces, b_pieces, "round {round}");
                let (c, c_pieces) = crl_by_push(&set, &ca, &signer, now);
                assert_eq!((&c, &c_pieces), (&a, &a_pieces), "round {round}");
                assert_eq!(a_pieces.last().unwrap().end, a.len());
                assert!(a_pieces.len() >= 3, "{}", a_pieces.len());
                let text = openssl_text(&a);
                assert_eq!(text, openssl_text(&b));
                assert_eq!(text.matches("Serial Number:").count(), rebuilt.len());
            }
        }
        assert!(kept.len() < set.len(), "some entries must have expired");
    }

    /// One more revocation changes the headers, the signature and the one
    /// piece that lists it: the other pieces, and so the stored rows, stay.
    #[test]
    fn a_revocation_changes_one_stored_piece() {
        let (der, signer) = crate::pki::x509::test_certificate(
            KeyAlgorithm::Rsa2048.generate().unwrap(),
            "CN=Test CA,O=Example,C=DE",
        );
        let ca = CaCertificate::from_der(der.0).unwrap();
        let now = crate::now();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut set = BTreeMap::new();
        for i in 0..20_000 {
            let (e, na) = entry(&mut rng, now + Duration::days(400), i);
            set.insert(e.serial, (e, na));
        }
        let mut list = full(&set, now);
        let (_, before) = crl(&list, &ca, &signer, now);
        let (e, na) = entry(&mut rng, now + Duration::days(400), 20_000);
        assert!(list.insert(&e, na));
        let (_, after) = crl(&list, &ca, &signer, now);
        let kept: std::collections::HashSet<_> = before.iter().map(|p| p.hash).collect();
        let new = after.iter().filter(|p| !kept.contains(&p.hash)).count();
        // ~20,000 / 512 pieces of entries, plus the headers and the signature.
        assert!(before.len() > 20, "{}", before.len());
        assert!(new <= 4, "{new} of {} pieces changed", after.len());
    }

    #[test]
    fn chunks_stay_bounded_and_splits_keep_order() {
        let now = crate::now();
        let mut rng = 7u64;
        let mut list = RevokedList::new(0);
        let mut serials = Vec::new();
        for i in 0..20_000 {
            let (mut e, _) = entry(&mut rng, now, i);
            // Inserts clustered in one region split the same chunks over and over.
            let mut bytes = *e.serial.as_bytes();
            bytes[0] = 0x40;
            e.serial = Serial::from_bytes(&bytes).unwrap();
            if list.insert(&e, now + Duration::days(1)) {
                serials.push(e.serial);
            }
        }
        assert_eq!(list.len(), serials.len());
        assert!(list.largest_chunk() <= CHUNK_ENTRIES);
        assert!(list.chunks() >= serials.len() / CHUNK_ENTRIES);
        serials.sort();
        let in_order: Vec<Serial> = list.chunks.iter().flat_map(|c| c.serials.clone()).collect();
        assert_eq!(in_order, serials);
        for s in &serials[..100] {
            assert!(list.contains(s));
            assert!(list.remove(s));
            assert!(!list.contains(s));
        }
        assert_eq!(list.len(), serials.len() - 100);
        // Everything expires; nothing is left, not even empty chunks.
        assert_eq!(list.expire(now + Duration::days(2)), serials.len() - 100);
        assert!(list.is_empty());
        assert_eq!(list.chunks(), 0);
        assert_eq!(list.encoded_len(), 0);
    }

    #[test]
    fn out_of_order_pushes_are_refused() {
        let now = crate::now();
        let mut rng = 3u64;
        let (a, _) = entry(&mut rng, now, 1);
        let mut list = RevokedList::new(5);
        assert!(list.push_sorted(&a, now + Duration::days(1)));
        assert!(!list.push_sorted(&a, now + Duration::days(1)));
        assert_eq!(list.len(), 1);
        assert_eq!(list.revision(), 5);
    }
}
