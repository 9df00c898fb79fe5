//! A plugin that serves `tok_depth@224` (a domain of the fixture model) and traps, for the
//! workflow failure tests: `detokenize` always executes `unreachable` (a real WebAssembly trap,
//! no panic message), and `tokenize` traps on the text `trap`, panics on `panic`, and otherwise
//! reads a JSON list of 196 ids into a 14×14 grid — so a test can see the plugin answer correctly
//! after one of its calls trapped.

use tessera_sdk::prelude::*;

/// The served domain, its vocabulary and grid side (as in the fixture model).
const DOMAIN: &str = "tok_depth@224";
const VOCAB: u32 = 512;
const SIDE: u32 = 14;

pub struct Trap;

/// Executes WebAssembly's `unreachable` instruction: the call traps without a panic message.
fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::unreachable()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::process::abort()
    }
}

impl ModalityPlugin for Trap {
    fn describe() -> PluginInfo {
        PluginInfo::new("trap", env!("CARGO_PKG_VERSION"), "traps on purpose")
            .with_modality(ModalityInfo::image_tokens(DOMAIN, VOCAB, SIDE * SIDE))
    }

    fn init(_assets: Assets, _config: Params) -> Result<Self, PluginError> {
        Ok(Trap)
    }

    fn tokenize(
        &mut self,
        domain: &str,
        input: Value,
        _params: &Params,
    ) -> Result<Tokens, PluginError> {
        let text = input.as_text()?.trim();
        match text {
            "trap" => trap(),
            "panic" => panic!("trap plugin panicked on purpose"),
            _ => {
                let ids: Vec<u32> = text
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .split(',')
                    .map(|id| {
                        id.trim()
                            .parse::<u32>()
                            .map_err(|e| PluginError::invalid(format!("id {id:?}: {e}")))
                    })
                    .collect::<Result<_, _>>()?;
                if let Some(bad) = ids.iter().find(|&&id| id >= VOCAB) {
                    return Err(PluginError::invalid(format!(
                        "id {bad} is outside the vocabulary of {VOCAB}"
                    )));
                }
                Tokens::grid(domain, ids, SIDE, SIDE)
            }
        }
    }

    fn detokenize(
        &mut self,
        _tokens: Tokens,
        _params: &Params,
    ) -> Result<Detokenized, PluginError> {
        trap()
    }
}

tessera_sdk::export_plugin!(Trap);
