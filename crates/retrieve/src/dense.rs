//! Dense retrieval: a bi-encoder's corpus embeddings, cached on disk, and exact top-k by dot product.
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use finerank_data::Corpus;
use finerank_engine::{dot, module_folders, Kind, Reranker, Role, ScoreOptions};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::{cache, io_error, top_k, Hit, RetrieveError};

/// Row-major embeddings, one row of `dim` floats per document.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    pub dim: usize,
    pub data: Vec<f32>,
}

const MAGIC: &[u8; 8] = b"FRNKEMB1";
const HEADER: usize = 24;
const BLOCK: usize = 256;

/// sha256 hex over the checkpoint files that decide its embeddings (config.json,
/// model.safetensors, tokenizer.json, and the sentence-transformers files if present: modules,
/// prompts, window, and every file of each module's folder, such as a Dense layer's weights):
/// keys the embedding cache, so a fine-tuned model saved over the same directory is never
/// served stale vectors.
pub fn model_fingerprint(dir: &Path) -> Result<String, RetrieveError> {
    let mut hash = Sha256::new();
    let mut files: Vec<(String, bool)> = [
        ("config.json", true),
        ("model.safetensors", true),
        ("tokenizer.json", true),
        ("modules.json", false),
        ("config_sentence_transformers.json", false),
        ("sentence_bert_config.json", false),
    ]
    .into_iter()
    .map(|(name, required)| (name.to_string(), required))
    .collect();
    files.extend(module_files(dir).into_iter().map(|name| (name, true)));
    for (name, required) in files {
        let path = dir.join(&name);
        let mut file = match File::open(&path) {
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
            opened => opened.map_err(io_error(&path))?,
        };
        let len = file.metadata().map_err(io_error(&path))?.len();
        // Name and length first, so no two sets of files hash alike.
        hash.update(name.as_bytes());
        hash.update(len.to_le_bytes());
        std::io::copy(&mut file, &mut hash).map_err(io_error(&path))?;
    }
    Ok(hex::encode(hash.finalize()))
}

/// The files in the folders that `modules.json` lists, relative to `dir`, sorted.
fn module_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = module_folders(dir)
        .into_iter()
        .flat_map(|sub| {
            std::fs::read_dir(dir.join(&sub))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().is_file())
                .map(move |e| format!("{sub}/{}", e.file_name().to_string_lossy()))
        })
        .collect();
    files.sort();
    files
}

/// The corpus's embeddings (each document's `full_text`, cut at the window), cached at
/// `cache_dir/emb-<model fp 16>-<corpus fp 16>-<max_len>.bin`: a header (magic, count, dim) then
/// little-endian f32. A file whose header or length does not match is rebuilt. `progress(done,
/// total)` counts embedded documents (blocks of 256); it is never called on a cache hit.
pub fn corpus_embeddings(
    reranker: &Reranker,
    model_key: &str,
    corpus: &Corpus,
    cache_dir: &Path,
    opts: &ScoreOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Embeddings, RetrieveError> {
    Ok(cached_corpus_embeddings(reranker, model_key, corpus, cache_dir, opts, progress)?.0)
}

/// [`corpus_embeddings`], and whether the cached file was reused.
pub(crate) fn cached_corpus_embeddings(
    reranker: &Reranker,
    model_key: &str,
    corpus: &Corpus,
    cache_dir: &Path,
    opts: &ScoreOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Embeddings, bool), RetrieveError> {
    let model = model_key.get(..16).unwrap_or(model_key);
    let max_len = opts.max_len.unwrap_or(reranker.window());
    let name = format!("emb-{model}-{}-{max_len}.bin", &corpus.fingerprint()[..16]);
    let path = cache_dir.join(&name);
    if let Some(emb) = read(&path, corpus.len()) {
        return Ok((emb, true));
    }
    let all: Vec<usize> = (0..corpus.len()).collect();
    let emb = embed_docs(reranker, corpus, &all, opts, progress)?;
    std::fs::create_dir_all(cache_dir).map_err(io_error(cache_dir))?;
    cache::remove_stale(cache_dir, &name);
    let tmp = cache::temp_path(cache_dir, &name);
    let written = write(&tmp, &emb, corpus.len()).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(&path)(e));
    }
    Ok((emb, false))
}

/// Embeddings of the documents `docs`, in that order, in blocks of 256.
pub(crate) fn embed_docs(
    reranker: &Reranker,
    corpus: &Corpus,
    docs: &[usize],
    opts: &ScoreOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Embeddings, RetrieveError> {
    if reranker.kind() != Kind::BiEncoder {
        return Err(no_embeddings(reranker));
    }
    let (mut dim, mut data) = (0, Vec::new());
    for (b, block) in docs.chunks(BLOCK).enumerate() {
        let texts: Vec<String> = block.iter().map(|&d| corpus.docs[d].full_text()).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        for v in reranker
            .embed(&refs, Role::Document, opts)
            .expect("a bi-encoder embeds")
        {
            dim = v.len();
            data.extend_from_slice(&v);
        }
        progress(b * BLOCK + block.len(), docs.len());
    }
    Ok(Embeddings { dim, data })
}

pub(crate) fn no_embeddings(reranker: &Reranker) -> RetrieveError {
    RetrieveError::NoEmbeddings(format!(
        "{} is a cross-encoder, which has no embeddings for dense retrieval; use --first-stage \
         bm25, or a bi-encoder --model",
        reranker.name()
    ))
}

fn write(path: &Path, emb: &Embeddings, count: usize) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    out.write_all(MAGIC)?;
    out.write_all(&(count as u64).to_le_bytes())?;
    out.write_all(&(emb.dim as u64).to_le_bytes())?;
    for x in &emb.data {
        out.write_all(&x.to_le_bytes())?;
    }
    // On disk before the rename makes it visible.
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// The cached embeddings of `count` documents, if the file is there and whole.
fn read(path: &Path, count: usize) -> Option<Embeddings> {
    let mut file = File::open(path).ok()?;
    let mut header = [0u8; HEADER];
    file.read_exact(&mut header).ok()?;
    let field = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap());
    let (n, dim) = (field(8), field(16));
    let floats = n.checked_mul(dim)?;
    let expected = floats.checked_mul(4)?.checked_add(HEADER as u64)?;
    let whole = &header[..8] == MAGIC && n == count as u64 && (dim > 0 || n == 0);
    if !whole || file.metadata().ok()?.len() != expected {
        return None;
    }
    // Read in chunks rather than all the bytes at once: a million rows would double the memory.
    let mut data = Vec::with_capacity(floats as usize);
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = floats as usize * 4;
    while left > 0 {
        let take = left.min(chunk.len());
        file.read_exact(&mut chunk[..take]).ok()?;
        data.extend(
            chunk[..take]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap())),
        );
        left -= take;
    }
    Some(Embeddings {
        dim: dim as usize,
        data,
    })
}

/// Exact top `k` of every document by dot product with each query (cosine, for unit vectors),
/// best first, ties by corpus order; queries run in parallel.
pub fn dense_search(emb: &Embeddings, queries: &[Vec<f32>], k: usize) -> Vec<Vec<Hit>> {
    if emb.dim == 0 {
        return vec![Vec::new(); queries.len()];
    }
    queries
        .par_iter()
        .map(|q| {
            let hits = emb
                .data
                .chunks_exact(emb.dim)
                .enumerate()
                .map(|(doc, row)| Hit {
                    doc,
                    score: f64::from(dot(q, row)),
                })
                .collect();
            top_k(hits, k)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn dense_search_equals_a_full_sort() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (n, dim) = (500, 16);
        // Coarse values so that ties happen and their order is checked too.
        let mut value = || f32::from(rng.random_range(-3i8..=3));
        let emb = Embeddings {
            dim,
            data: (0..n * dim).map(|_| value()).collect(),
        };
        let queries: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..dim).map(|_| value()).collect())
            .collect();
        for k in [0, 1, 10, n, n + 5] {
            let found = dense_search(&emb, &queries, k);
            for (q, hits) in queries.iter().zip(found) {
                let mut all: Vec<(f32, usize)> = emb
                    .data
                    .chunks_exact(dim)
                    .enumerate()
                    .map(|(d, row)| (dot(q, row), d))
                    .collect();
                all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                let expected: Vec<(f64, usize)> = all
                    .iter()
                    .take(k)
                    .map(|&(s, d)| (f64::from(s), d))
                    .collect();
                let got: Vec<(f64, usize)> = hits.iter().map(|h| (h.score, h.doc)).collect();
                assert_eq!(got, expected, "k = {k}");
            }
        }
    }

    #[test]
    fn a_cache_file_that_does_not_match_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.bin");
        let emb = Embeddings {
            dim: 2,
            data: vec![1.0, -2.5, 0.0, 3.25],
        };
        write(&path, &emb, 2).unwrap();
        assert_eq!(read(&path, 2), Some(emb));
        assert_eq!(read(&path, 3), None, "another document count");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(read(&path, 2), None, "cut short");
        let mut wrong = bytes.clone();
        wrong[0] = b'X';
        std::fs::write(&path, &wrong).unwrap();
        assert_eq!(read(&path, 2), None, "another magic");
    }
}
