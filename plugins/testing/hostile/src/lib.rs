//! A plugin that misbehaves on request, for the sandbox tests. `tokenize` with the text
//! `loop`, `alloc`, `panic`, `huge`, `forbidden-graph` or `graph` does what the name says; any
//! other text is echoed back as its bytes, so tests can check the plugin still answers correctly
//! after a failure. `calls` returns how many calls this instance has served (to observe instance
//! reuse and replacement) and `escape` tries to reach the filesystem and the environment.

use tessera_sdk::prelude::*;

pub struct Hostile {
    calls: u32,
}

impl ModalityPlugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "hostile",
            env!("CARGO_PKG_VERSION"),
            "misbehaves on request",
        )
        .with_modality(ModalityInfo::sequence("hostile", Some(256), None))
    }

    fn init(_assets: Assets, _config: Params) -> Result<Self, PluginError> {
        Ok(Hostile { calls: 0 })
    }

    fn tokenize(
        &mut self,
        domain: &str,
        input: Value,
        _params: &Params,
    ) -> Result<Tokens, PluginError> {
        let text = input.as_text()?;
        self.calls += 1;
        match text {
            "calls" => Ok(Tokens::sequence(domain, vec![self.calls])),
            "escape" => {
                let file = std::fs::read("/etc/hostname").map(|b| b.len());
                let dir = std::fs::read_dir("/").map(|d| d.count());
                let env = std::env::var("HOME");
                let reached = [file.is_ok(), dir.is_ok(), env.is_ok()];
                Ok(Tokens::sequence(
                    domain,
                    reached.iter().map(|&r| u32::from(r)).collect(),
                ))
            }
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("hostile plugin panicked on purpose"),
            "huge" => Ok(Tokens::sequence(domain, vec![7; 4 << 20])),
            "forbidden-graph" => {
                let graph = tessera_sdk::nn::load("forbidden/network")?;
                drop(graph);
                Ok(Tokens::sequence(domain, vec![]))
            }
            "graph" => {
                let graph = tessera_sdk::nn::load("test/double")?;
                let input = Tensor::from_f32(&[3], &[1.0, 2.5, -4.0])?;
                let out = graph.compute(&[tessera_sdk::nn::NamedTensor {
                    name: "x".into(),
                    tensor: input,
                }])?;
                let values = out
                    .first()
                    .ok_or_else(|| PluginError::Other("graph returned nothing".into()))?
                    .tensor
                    .to_f32()?;
                Ok(Tokens::sequence(
                    domain,
                    values.iter().map(|v| *v as i64 as u32).collect(),
                ))
            }
            other => Ok(Tokens::sequence(
                domain,
                other.bytes().map(u32::from).collect(),
            )),
        }
    }

    fn detokenize(&mut self, tokens: Tokens, _params: &Params) -> Result<Detokenized, PluginError> {
        let bytes: Result<Vec<u8>, _> = tokens.ids.iter().map(|&id| u8::try_from(id)).collect();
        let bytes = bytes.map_err(|_| PluginError::invalid("ids must be bytes"))?;
        let text = String::from_utf8(bytes)
            .map_err(|e| PluginError::invalid(format!("not UTF-8: {e}")))?;
        Ok(Detokenized::single("text", Value::Text(text)))
    }
}

tessera_sdk::export_plugin!(Hostile);
