//! The stored value format: a self-describing header, JSON, and compression.
//!
//! ```text
//! 0xFE  codec  written_ms (u64 BE)  payload
//!       0x01 = JSON text
//!       0x02 = u32 BE length of the JSON, then one zstd frame of it
//! ```
//! 0xFE never occurs in UTF-8, so a value without it is one the old adapter
//! wrote: plain JSON, or `compressed:` followed by JSON. `written_ms` (wall
//! clock) lets a replay after an outage skip keys another instance wrote later.

use std::cell::RefCell;
use std::sync::Arc;

use zstd::bulk::{Compressor, Decompressor};

use crate::error::{CacheError, ErrorKind};

pub const MAGIC: u8 = 0xFE;
const CODEC_JSON: u8 = 0x01;
const CODEC_ZSTD: u8 = 0x02;
const HEADER: usize = 10;
const LEGACY_PREFIX: &[u8] = b"compressed:";
/// Measured on the benchmark's conversations (20 values each, compressed one
/// by one with the zstd and lz4 CLIs): level 1 keeps 33% (9 KB contexts) and
/// 19% (57 KB) of the JSON at 168-247 MB/s; level 3 is 1-5% smaller at half
/// the speed; lz4 keeps 46% and 28%, short of the memory goals.
const ZSTD_LEVEL: i32 = 1;
/// Refuse to inflate anything claiming to be larger than this.
const MAX_DECODED: usize = 512 << 20;

thread_local! {
  // One zstd context per thread, reused: a context is a few hundred KB of
  // tables that would otherwise be allocated and set up for every value.
  static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
  static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Encodes JSON text, compressing it when it is longer than `threshold` bytes
/// and compression actually saves space.
pub fn encode(json: &str, threshold: usize, written_ms: u64) -> Vec<u8> {
  if json.len() > threshold && json.len() <= MAX_DECODED {
    let start = HEADER + 4;
    let mut out = vec![0; start + zstd::zstd_safe::compress_bound(json.len())];
    let written = COMPRESSOR.with(|c| {
      let mut c = c.borrow_mut();
      let compressor = match c.as_mut() {
        Some(compressor) => compressor,
        None => c.insert(Compressor::new(ZSTD_LEVEL).ok()?),
      };
      compressor.compress_to_buffer(json.as_bytes(), &mut out[start..]).ok()
    });
    if let Some(written) = written.filter(|w| w + 4 < json.len()) {
      out.truncate(start + written);
      out[0] = MAGIC;
      out[1] = CODEC_ZSTD;
      out[2..HEADER].copy_from_slice(&written_ms.to_be_bytes());
      out[HEADER..start].copy_from_slice(&(json.len() as u32).to_be_bytes());
      return out;
    }
  }
  let mut out = header(written_ms);
  out.extend_from_slice(json.as_bytes());
  out
}

/// The header of an uncompressed JSON value (the increment script appends the digits).
pub fn header(written_ms: u64) -> Vec<u8> {
  let mut out = Vec::with_capacity(HEADER + 32);
  push_header(&mut out, CODEC_JSON, written_ms);
  out
}

fn push_header(out: &mut Vec<u8>, codec: u8, written_ms: u64) {
  out.push(MAGIC);
  out.push(codec);
  out.extend_from_slice(&written_ms.to_be_bytes());
}

/// Decodes a stored value to JSON text (copied once, into the `Arc`).
pub fn decode(bytes: &[u8]) -> Result<Arc<str>, CacheError> {
  if bytes.first() != Some(&MAGIC) {
    return Ok(decode_legacy(bytes).into());
  }
  if bytes.len() < HEADER {
    return Err(corrupt("value shorter than its header"));
  }
  let payload = &bytes[HEADER..];
  match bytes[1] {
    CODEC_JSON => std::str::from_utf8(payload).map(Arc::from).map_err(|_| corrupt("JSON value is not UTF-8")),
    CODEC_ZSTD => {
      let (len, frame) = payload.split_at_checked(4).ok_or_else(|| corrupt("compressed value too short"))?;
      let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
      if len > MAX_DECODED {
        return Err(corrupt("compressed value claims an implausible size"));
      }
      let mut raw = vec![0u8; len];
      let written = DECOMPRESSOR
        .with(|d| {
          let mut d = d.borrow_mut();
          let decompressor = match d.as_mut() {
            Some(decompressor) => decompressor,
            None => d.insert(Decompressor::new()?),
          };
          decompressor.decompress_to_buffer(frame, &mut raw[..])
        })
        .map_err(|e| corrupt(&format!("zstd: {e}")))?;
      if written != len {
        return Err(corrupt("decompressed length differs from the header's"));
      }
      std::str::from_utf8(&raw).map(Arc::from).map_err(|_| corrupt("decompressed value is not UTF-8"))
    }
    other => Err(corrupt(&format!("unknown codec {other:#04x} (written by a newer version?)"))),
  }
}

/// When the value was written (ms since the epoch); 0 for the old adapter's values.
pub fn written_ms(bytes: &[u8]) -> u64 {
  match bytes {
    [MAGIC, _, ts @ ..] if ts.len() >= 8 => u64::from_be_bytes(ts[..8].try_into().unwrap()),
    _ => 0,
  }
}

/// The old adapter's values: JSON, or `compressed:` + JSON (never compressed).
/// Text that is not JSON (written by something else) comes back as a JSON string.
fn decode_legacy(bytes: &[u8]) -> String {
  let body = bytes.strip_prefix(LEGACY_PREFIX).unwrap_or(bytes);
  let text = String::from_utf8_lossy(body);
  if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() {
    text.into_owned()
  } else {
    serde_json::to_string(&text).expect("a string always serialises")
  }
}

fn corrupt(why: &str) -> CacheError {
  CacheError::new(ErrorKind::Internal, format!("stored value cannot be decoded: {why}"))
}

#[cfg(test)]
mod tests {
  use super::*;

  fn transcript(n: usize) -> String {
    let lines = [
      "I'd like to book a test ride for Saturday.",
      "Sure, which model were you looking at?",
      "The blue hybrid, if it is still in stock.",
      "Let me check the inventory for you.",
    ];
    let msgs: Vec<String> =
      (0..n).map(|i| format!("{{\"role\":\"user\",\"content\":\"{} #{i}\"}}", lines[i % 4])).collect();
    format!("[{}]", msgs.join(","))
  }

  #[test]
  fn small_values_stay_plain_and_round_trip() {
    for json in ["null", "true", "42", "\"hi\"", "[1,2]", "{\"a\":{\"b\":null}}"] {
      let enc = encode(json, 1024, 7);
      assert_eq!(enc[..2], [MAGIC, CODEC_JSON]);
      assert_eq!(written_ms(&enc), 7);
      assert_eq!(&*decode(&enc).unwrap(), json);
    }
  }

  #[test]
  fn large_values_are_compressed_and_round_trip() {
    let json = transcript(200);
    let enc = encode(&json, 1024, 1);
    assert_eq!(enc[1], CODEC_ZSTD);
    assert!(enc.len() * 3 < json.len(), "{} vs {}", enc.len(), json.len());
    assert_eq!(&*decode(&enc).unwrap(), json);
  }

  #[test]
  fn incompressible_values_are_kept_plain() {
    let json =
      format!("\"{}\"", (0..2000u32).map(|i| char::from(b'a' + ((i * 7919 + i * i) % 26) as u8)).collect::<String>());
    let enc = encode(&json, 16, 1);
    assert_eq!(&*decode(&enc).unwrap(), json);
  }

  #[test]
  fn the_old_adapters_values_still_read() {
    assert_eq!(&*decode(b"{\"a\":1}").unwrap(), "{\"a\":1}");
    assert_eq!(&*decode(b"compressed:[1,2,3]").unwrap(), "[1,2,3]");
    assert_eq!(&*decode(b"5").unwrap(), "5");
    assert_eq!(&*decode(b"plain text").unwrap(), "\"plain text\"");
    assert_eq!(written_ms(b"{\"a\":1}"), 0);
  }

  #[test]
  fn corrupt_values_are_errors_not_panics() {
    assert!(decode(&[MAGIC]).is_err());
    assert!(decode(&[MAGIC, 9, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    assert!(decode(&[MAGIC, CODEC_ZSTD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 1, 2]).is_err());
    assert!(decode(&[MAGIC, CODEC_ZSTD, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
  }
}
