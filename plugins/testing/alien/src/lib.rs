//! A plugin built against `tessera:plugin@0.2.0`, a world this host does not link, so loading it
//! must fail with a world-mismatch error.

wit_bindgen::generate!({ world: "plugin", path: "wit" });

struct Alien;

impl exports::tessera::plugin::modality::Guest for Alien {
    fn tokenize(domain: String, text: String) -> Vec<u64> {
        tessera::plugin::host::log(&domain, &[]);
        text.bytes().map(u64::from).collect()
    }
}

export!(Alien);
