use std::path::{Path, PathBuf};

use tokenizers::{Encoding, Token, Tokenizer};

/// Token ids for one model input, without padding. `type_ids` follow the
/// tokenizer's template (0 for the first segment, 1 for the second in BERT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    pub type_ids: Vec<i64>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error(
        "cannot load tokenizer {}: {source}. Point to the checkpoint's tokenizer.json \
         (written by `save_pretrained` of a fast tokenizer; convert slow-only checkpoints \
         with `AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(dir)`)",
        path.display()
    )]
    Load {
        path: PathBuf,
        #[source]
        source: tokenizers::Error,
    },
    #[error(
        "tokenizer {} loads but cannot encode text: {source}. The file is incomplete \
         (e.g. its unk token is missing from the vocabulary); re-export it from the checkpoint",
        path.display()
    )]
    Unusable {
        path: PathBuf,
        #[source]
        source: tokenizers::Error,
    },
}

/// The checkpoint's tokenizer, used only for text -> ids and for its
/// post-processor template; truncation and padding are done by this crate.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl TextTokenizer {
    /// Loads tokenizer.json. Disables any truncation/padding stored in the file
    /// (we do our own).
    pub fn from_file(path: &Path) -> Result<Self, TextError> {
        let load_err = |source| TextError::Load {
            path: path.to_owned(),
            source,
        };
        let mut inner = Tokenizer::from_file(path).map_err(load_err)?;
        // Exported files often carry the export-time max_length/padding; left on,
        // they would silently cut or pad every input behind our back.
        inner.with_truncation(None).map_err(load_err)?;
        inner.with_padding(None);
        // Fail at load rather than on the first request if the file cannot encode.
        inner
            .encode_fast(("probe text, ünïcödé", "second segment"), true)
            .map_err(|source| TextError::Unusable {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self { inner })
    }

    /// Number of special tokens the template adds to a single text / to a pair
    /// (e.g. BERT: 2 and 3; RoBERTa: 2 and 4).
    pub fn special_tokens(&self, pair: bool) -> usize {
        self.inner
            .get_post_processor()
            .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, pair))
    }

    /// The id of `token` in the vocabulary (added tokens included), as transformers'
    /// `convert_tokens_to_ids` looks it up: the token itself, not the encoding of a text.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token ids of a text, without special tokens.
    ///
    /// # Panics
    /// Only if the tokenizer fails on text after passing the load-time probe,
    /// which the model types in `tokenizers` do not do.
    pub fn tokens(&self, text: &str) -> Vec<u32> {
        self.inner
            .encode_fast(text, false)
            .expect("tokenizer that passed the load probe failed to encode text")
            .get_ids()
            .to_vec()
    }

    /// The ids of `prompt + text`, as sentence-transformers tokenizes a prompted text, split
    /// where the text begins: the tokens that end within the prompt, then the rest. A long text's
    /// windows can then each start with the prompt, and the first is exactly the prompted text
    /// cut to length, whatever the tokenizer does with the space between them.
    pub fn prompted_tokens(&self, prompt: &str, text: &str) -> (Vec<u32>, Vec<u32>) {
        if prompt.is_empty() {
            return (Vec::new(), self.tokens(text));
        }
        let mut parts = self.split_tokens(&format!("{prompt}{text}"), &[prompt.len()]);
        let rest = parts.pop().expect("one split point gives two parts");
        (parts.pop().expect("one split point gives two parts"), rest)
    }

    /// The ids of `text`, without special tokens, in `bounds.len() + 1` consecutive parts: a
    /// token belongs to the first part whose bound (a byte offset into `text`, ascending) it
    /// ends at or before, else to the last; a token across a bound goes with what follows it.
    /// Concatenated, the parts are the text's ids.
    pub fn split_tokens(&self, text: &str, bounds: &[usize]) -> Vec<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .expect("tokenizer that passed the load probe failed to encode text");
        let mut parts = vec![Vec::new(); bounds.len() + 1];
        // Never back to an earlier part, whatever offsets a token reports: the parts stay in order.
        let mut part = 0;
        for (&id, &(_, end)) in encoding.get_ids().iter().zip(encoding.get_offsets()) {
            part = part.max(bounds.partition_point(|&b| b < end));
            parts[part].push(id);
        }
        parts
    }

    /// Same as [`tokens`](Self::tokens) for many texts, in parallel.
    pub fn tokens_batch(&self, texts: &[&str]) -> Vec<Vec<u32>> {
        self.inner
            .encode_batch_fast(texts.to_vec(), false)
            .expect("tokenizer that passed the load probe failed to encode text")
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect()
    }

    /// `[CLS] text [SEP]`, truncated from the right to `max_len` in total.
    /// If `max_len` is smaller than the special tokens, the result holds just them.
    pub fn encode_single(&self, text: &str, max_len: usize) -> Encoded {
        let mut ids = self.tokens(text);
        ids.truncate(max_len.saturating_sub(self.special_tokens(false)));
        self.single_from_tokens(&ids)
    }

    /// Builds the pair input from already-tokenized parts with the tokenizer's own
    /// post-processor template (BERT `[CLS] a [SEP] b [SEP]`, RoBERTa
    /// `<s> a </s></s> b </s>`). No truncation: the caller guarantees it fits.
    pub fn pair_from_tokens(&self, a: &[u32], b: &[u32]) -> Encoded {
        self.post_process(a, Some(b))
    }

    pub fn single_from_tokens(&self, a: &[u32]) -> Encoded {
        self.post_process(a, None)
    }

    /// Hugging Face compatible pair encoding, truncation strategy `longest_first`
    /// to `max_len` tokens in total: reproduces
    /// `tokenizer(a, b, truncation="longest_first", max_length=max_len)`.
    /// If `max_len` is smaller than the special tokens, the result holds just them.
    pub fn encode_pair_longest_first(&self, a: &str, b: &str, max_len: usize) -> Encoded {
        let mut a = self.tokens(a);
        let mut b = self.tokens(b);
        let budget = max_len.saturating_sub(self.special_tokens(true));
        let (keep_a, keep_b) = longest_first(a.len(), b.len(), budget);
        a.truncate(keep_a);
        b.truncate(keep_b);
        self.pair_from_tokens(&a, &b)
    }

    fn post_process(&self, a: &[u32], b: Option<&[u32]>) -> Encoded {
        // The post-processor only reads ids; token strings and offsets are not needed.
        let encoding = |ids: &[u32], type_id| {
            let tokens = ids.iter().map(|&id| Token::new(id, String::new(), (0, 0)));
            Encoding::from_tokens(tokens.collect(), type_id)
        };
        let merged = self
            .inner
            .post_process(encoding(a, 0), b.map(|b| encoding(b, 1)), true)
            .expect("post-processing token ids cannot fail with truncation disabled");
        Encoded {
            ids: merged.get_ids().iter().map(|&i| i64::from(i)).collect(),
            type_ids: merged
                .get_type_ids()
                .iter()
                .map(|&i| i64::from(i))
                .collect(),
        }
    }
}

/// Lengths to keep of a pair under `budget` content tokens, as the Rust
/// `tokenizers` LongestFirst strategy (which transformers' fast tokenizers use)
/// computes them: the shorter side is kept whole if it fits in half the budget;
/// otherwise both get half and the longer one (the second on a tie) gets the odd token.
/// This differs from the slow tokenizers' one-token-at-a-time loop on odd budgets.
fn longest_first(len_a: usize, len_b: usize, budget: usize) -> (usize, usize) {
    if len_a + len_b <= budget {
        return (len_a, len_b);
    }
    let short = len_a.min(len_b);
    let (keep_short, keep_long) = if short <= budget / 2 {
        (short, budget - short)
    } else {
        (budget / 2, budget - budget / 2)
    };
    if len_a > len_b {
        (keep_long, keep_short)
    } else {
        (keep_short, keep_long)
    }
}

#[cfg(test)]
mod tests {
    use super::longest_first;

    #[test]
    fn longest_first_matches_tokenizers_cases() {
        // Values checked against transformers 5.24 fast BERT tokenizer.
        assert_eq!(longest_first(10, 30, 13), (6, 7));
        assert_eq!(longest_first(30, 10, 13), (7, 6));
        assert_eq!(longest_first(10, 10, 13), (6, 7));
        assert_eq!(longest_first(10, 30, 1), (0, 1));
        assert_eq!(longest_first(30, 10, 1), (1, 0));
        assert_eq!(longest_first(10, 30, 0), (0, 0));
        assert_eq!(longest_first(3, 30, 13), (3, 10));
        assert_eq!(longest_first(30, 3, 13), (10, 3));
        assert_eq!(longest_first(3, 4, 13), (3, 4));
    }
}
