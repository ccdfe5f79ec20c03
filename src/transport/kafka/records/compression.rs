//! The record batch compression codecs: gzip (flate2), snappy (snap, with
//! Java's xerial framing), LZ4 frames (lz4_flex) and zstd (ruzstd), all pure
//! Rust. Compression for [`encode`](super::encode), capped decompression for
//! [`decode`](super::decode).

use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::be_array;

/// Compression of produced record batches (see
/// [`KafkaConfig::compression`](crate::KafkaConfig::compression)), and the
/// codec id in a batch's attributes (bits 0-2). Consumers read every codec
/// whatever this says. Every codec is pure Rust, encoder and decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// No compression (codec 0).
    #[default]
    None,
    /// Gzip (codec 1; flate2's pure-Rust deflate, default level).
    Gzip,
    /// Snappy (codec 2) with Java's xerial ("snappy-java") framing, as the
    /// Java client writes it. Tansu's SQL storage cannot re-encode it:
    /// prefer another codec with Tansu.
    Snappy,
    /// LZ4 (codec 3): the frame format in 64 KiB independent blocks, what
    /// Kafka's Java client reads (lz4_flex's safe encoder).
    Lz4,
    /// Zstandard (codec 4; ruzstd's encoder, its fastest level: about zstd
    /// level 1, so larger output than other clients' default level 3).
    Zstd,
}

impl Compression {
    /// The codec id in the batch attributes.
    pub(crate) fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec for an attribute id, `None` when unknown.
    pub(crate) fn from_id(id: i16) -> Option<Compression> {
        match id {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Kafka's name for the codec (`compression.type`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Xerial ("snappy-java") stream magic; followed by i32 version and i32
/// compatible version (both 1), then blocks of [u32 BE length][raw snappy].
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\0";
/// snappy-java's default block size, which the Java producer uses.
const XERIAL_BLOCK: usize = 32 * 1024;

pub(super) const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// Compresses `raw` onto the end of `out`.
pub(super) fn deflate(
    compression: Compression,
    raw: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    guarded(|| match compression {
        Compression::None => {
            out.extend_from_slice(raw);
            Ok(())
        }
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            enc.write_all(raw).map_err(|e| e.to_string())?;
            enc.finish().map(|_| ()).map_err(|e| e.to_string())
        }
        Compression::Snappy => {
            // Java-compatible xerial framing in 32 KiB blocks (what the Java
            // producer writes; every consumer accepts it).
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // compatible version
            let mut enc = snap::raw::Encoder::new();
            for chunk in raw.chunks(XERIAL_BLOCK) {
                let len_at = out.len();
                out.extend_from_slice(&[0; 4]);
                let start = out.len();
                out.resize(start + snap::raw::max_compress_len(chunk.len()), 0);
                let n = enc
                    .compress(chunk, &mut out[start..])
                    .map_err(|e| e.to_string())?;
                out.truncate(start + n);
                out[len_at..start].copy_from_slice(&(n as u32).to_be_bytes());
            }
            Ok(())
        }
        Compression::Lz4 => {
            // What Kafka's KafkaLZ4BlockInputStream accepts: independent
            // blocks, 64 KiB (its default), no content size or checksums.
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent)
                .block_checksums(false)
                .content_checksum(false);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            enc.write_all(raw).map_err(|e| e.to_string())?;
            enc.finish().map(|_| ()).map_err(|e| e.to_string())
        }
        Compression::Zstd => {
            ruzstd::encoding::compress(raw, out, ruzstd::encoding::CompressionLevel::Fastest);
            Ok(())
        }
    })
}

/// Runs third-party codec code, turning a panic into an error: a bug in a
/// decompressor fed hostile bytes must not take the consumer thread down.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err("codec panicked".to_string()))
}
/// Decompresses a batch's records block, at most `cap` bytes.
pub(super) fn inflate(
    compression: Compression,
    input: &[u8],
    cap: usize,
) -> Result<Vec<u8>, String> {
    guarded(|| match compression {
        Compression::None => Ok(input.to_vec()),
        // Multi: Java's GZIPInputStream also reads concatenated members.
        Compression::Gzip => {
            read_capped(flate2::read::MultiGzDecoder::new(input), input.len(), cap)
        }
        Compression::Snappy => snappy_decompress(input, cap),
        Compression::Lz4 => {
            read_capped(lz4_flex::frame::FrameDecoder::new(input), input.len(), cap)
        }
        Compression::Zstd => zstd_decompress(input, cap),
    })
}

fn cap_exceeded(cap: usize) -> String {
    format!("decompressed size exceeds the {} MiB cap", cap >> 20)
}

/// Reads all of `r`, failing past `cap` bytes (zip bombs).
fn read_capped(r: impl Read, input_len: usize, cap: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(input_len.saturating_mul(4).min(cap));
    r.take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() > cap {
        return Err(cap_exceeded(cap));
    }
    Ok(out)
}

/// Xerial-framed snappy (Java, kafka-protocol) or, like librdkafka and
/// snappy-java, a plain raw snappy block when the magic is absent.
fn snappy_decompress(input: &[u8], cap: usize) -> Result<Vec<u8>, String> {
    let mut dec = snap::raw::Decoder::new();
    if !input.starts_with(XERIAL_MAGIC) {
        let len = snap::raw::decompress_len(input).map_err(|e| e.to_string())?;
        if len > cap {
            return Err(cap_exceeded(cap));
        }
        let mut out = vec![0; len];
        let n = dec.decompress(input, &mut out).map_err(|e| e.to_string())?;
        out.truncate(n);
        return Ok(out);
    }
    // Magic, then i32 version and i32 compatible version, which we skip as
    // librdkafka does.
    let mut rest = input.get(16..).ok_or("truncated xerial header")?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len_bytes = rest.get(..4).ok_or("truncated xerial block length")?;
        let len = u32::from_be_bytes(be_array(len_bytes, 0)) as usize;
        let block = rest
            .get(4..)
            .and_then(|r| r.get(..len))
            .ok_or_else(|| format!("xerial block of {len} bytes overruns the data"))?;
        rest = rest.get(4 + block.len()..).unwrap_or_default();
        let ulen = snap::raw::decompress_len(block).map_err(|e| e.to_string())?;
        let start = out.len();
        let end = start
            .checked_add(ulen)
            .filter(|&end| end <= cap)
            .ok_or_else(|| cap_exceeded(cap))?;
        out.resize(end, 0);
        let n = dec
            .decompress(block, &mut out[start..])
            .map_err(|e| e.to_string())?;
        out.truncate(start + n);
    }
    Ok(out)
}

/// One or more zstd frames. Each frame header is checked first: ruzstd
/// buffers a whole window before handing out output and trusts the header's
/// window size (up to terabytes), so a tiny hostile frame could allocate
/// without bound.
fn zstd_decompress(input: &[u8], cap: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(cap));
    let mut rest = input;
    while !rest.is_empty() {
        if let Some(skip) = zstd_check_frame(rest, cap)? {
            rest = rest.get(skip..).ok_or("truncated zstd skippable frame")?;
            continue;
        }
        let before = rest.len();
        let mut dec =
            ruzstd::decoding::StreamingDecoder::new(&mut rest).map_err(|e| e.to_string())?;
        let room = cap.saturating_sub(out.len());
        (&mut dec)
            .take(room as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| e.to_string())?;
        if out.len() > cap {
            return Err(cap_exceeded(cap));
        }
        drop(dec);
        if rest.len() == before {
            return Err("zstd frame consumed no input".into()); // cannot loop forever
        }
    }
    Ok(out)
}

/// Checks a zstd frame header: `Ok(Some(n))` for a skippable frame of `n`
/// bytes, `Ok(None)` for a data frame whose window and content size fit `cap`.
fn zstd_check_frame(b: &[u8], cap: usize) -> Result<Option<usize>, String> {
    let truncated = || "truncated zstd frame header".to_string();
    let magic = u32::from_le_bytes(
        b.get(..4)
            .ok_or_else(truncated)?
            .try_into()
            .map_err(|_| truncated())?,
    );
    if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
        let size = u32::from_le_bytes(
            b.get(4..8)
                .ok_or_else(truncated)?
                .try_into()
                .map_err(|_| truncated())?,
        );
        return Ok(Some((size as usize).saturating_add(8)));
    }
    if magic != ZSTD_MAGIC {
        return Err(format!("bad zstd magic {magic:#010x}"));
    }
    let fhd = *b.get(4).ok_or_else(truncated)?;
    let single_segment = fhd & 0x20 != 0;
    let mut p = 5;
    let mut window = None;
    if !single_segment {
        let wd = *b.get(p).ok_or_else(truncated)?;
        p += 1;
        let base = 1u64 << (10 + u32::from(wd >> 3));
        window = Some(base + (base / 8) * u64::from(wd & 7));
    }
    let dict_len = [0usize, 1, 2, 4][usize::from(fhd & 3)];
    let dict = b.get(p..p + dict_len).ok_or_else(truncated)?;
    if dict.iter().any(|&x| x != 0) {
        return Err("zstd dictionaries are not supported".into());
    }
    p += dict_len;
    let fcs_len = match fhd >> 6 {
        0 if single_segment => 1,
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let fcs_bytes = b.get(p..p + fcs_len).ok_or_else(truncated)?;
    let mut fcs = fcs_bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    if fcs_len == 2 {
        fcs += 256;
    }
    let window = window.unwrap_or(fcs);
    if window > cap as u64 {
        return Err(format!(
            "zstd window of {window} bytes exceeds the {} MiB cap",
            cap >> 20
        ));
    }
    if fcs_len > 0 && fcs > cap as u64 {
        return Err(cap_exceeded(cap));
    }
    Ok(None)
}
