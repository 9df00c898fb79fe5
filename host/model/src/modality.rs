//! The 4M modality table: what kind of embedding each domain name uses.
//!
//! This is the reference's `MODALITY_INFO` for inference: the embedding kind and the fixed
//! geometry (image size and patch size overrides, sequence length limits) per domain name.
//! Vocabulary sizes and token counts are *not* taken from here: they come from the checkpoint's
//! tensor shapes, so reduced-vocabulary or custom checkpoints load unchanged.

/// ImageNet mean used to normalise `rgb@*` pixels fed to the model (after scaling to 0..1).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation used to normalise `rgb@*` pixels fed to the model.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How a domain is embedded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModalityKind {
    /// Raw pixels, patchified channel-last and linearly projected (`rgb@224`).
    Pixels {
        channels: usize,
        input_size: usize,
        patch_size: usize,
    },
    /// Pre-tokenised image-like ids on a grid (`tok_*`). `None` sizes come from the config.
    ImageTokens {
        input_size: Option<usize>,
        patch_size: Option<usize>,
        /// The `_global` modalities learn their positional table instead of using 2-D sin-cos.
        learned_positions: bool,
    },
    /// Text-like token sequences sharing the WordPiece vocabulary (`caption`, `det`, ...).
    Sequence {
        /// Token budget of a generated sequence (`max_tokens`).
        max_tokens: usize,
        /// `max_length` of the embedding module: decoder ranks at or beyond it use position 0.
        max_length: usize,
    },
    /// Pre-computed embedding vectors (`t5_caption`, T5-XXL outputs); encoder only.
    SequenceEmbedding {
        max_length: usize,
        embedding_dim: usize,
    },
}

/// One entry of the modality table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModalityInfo {
    pub name: &'static str,
    /// The reference's uint15 tag (sha256 of the name mod 2^15); informative only.
    pub id: u16,
    pub kind: ModalityKind,
    /// Whether the reference builds an encoder embedding for the domain.
    pub has_encoder: bool,
    /// Whether the reference builds a decoder embedding (i.e. the domain can be generated).
    pub has_decoder: bool,
}

impl ModalityInfo {
    /// Whether the domain is text-like (autoregressively generated).
    pub fn is_sequence(&self) -> bool {
        matches!(self.kind, ModalityKind::Sequence { .. })
    }
}

const fn seq(name: &'static str, id: u16, max_tokens: usize, max_length: usize) -> ModalityInfo {
    ModalityInfo {
        name,
        id,
        kind: ModalityKind::Sequence {
            max_tokens,
            max_length,
        },
        has_encoder: true,
        has_decoder: true,
    }
}

const fn tok(
    name: &'static str,
    id: u16,
    input_size: Option<usize>,
    patch_size: Option<usize>,
    learned_positions: bool,
) -> ModalityInfo {
    ModalityInfo {
        name,
        id,
        kind: ModalityKind::ImageTokens {
            input_size,
            patch_size,
            learned_positions,
        },
        has_encoder: true,
        has_decoder: true,
    }
}

const fn pixels(name: &'static str, id: u16, input_size: usize) -> ModalityInfo {
    ModalityInfo {
        name,
        id,
        kind: ModalityKind::Pixels {
            channels: 3,
            input_size,
            patch_size: 16,
        },
        has_encoder: true,
        has_decoder: false,
    }
}

/// The 4M-21 domains plus the 4M-7 super-resolution ones.
pub const MODALITIES: &[ModalityInfo] = &[
    pixels("rgb@224", 20716, 224),
    tok("tok_rgb@224", 11606, Some(224), Some(16), false),
    tok("tok_depth@224", 20063, Some(224), Some(16), false),
    tok("tok_normal@224", 16656, Some(224), Some(16), false),
    tok("tok_semseg@224", 12515, Some(224), Some(16), false),
    tok("tok_clip@224", 11422, Some(224), Some(16), false),
    tok("tok_canny_edge@224", 12520, Some(224), Some(16), false),
    tok("tok_sam_edge@224", 7842, Some(224), Some(16), false),
    tok("tok_dinov2@224", 26275, Some(224), Some(14), false),
    tok("tok_imagebind@224", 6200, Some(224), Some(14), false),
    tok("tok_dinov2_global", 29172, None, Some(56), true),
    tok("tok_imagebind_global", 12099, None, Some(56), true),
    seq("caption", 32652, 256, 256),
    seq("det", 30982, 256, 256),
    seq("metadata", 1951, 40, 40),
    seq("human_poses", 30584, 275, 263),
    seq("color_palette", 12967, 23, 23),
    seq("sam_instance", 1938, 290, 290),
    ModalityInfo {
        name: "t5_caption",
        id: 28551,
        kind: ModalityKind::SequenceEmbedding {
            max_length: 77,
            embedding_dim: 4096,
        },
        has_encoder: true,
        has_decoder: false,
    },
    pixels("rgb@448", 27924, 448),
    tok("tok_rgb@448", 1057, Some(448), Some(16), false),
    tok("tok_depth@448", 11499, Some(448), Some(16), false),
    tok("tok_normal@448", 32321, Some(448), Some(16), false),
    tok("tok_semseg@448", 10291, Some(448), Some(16), false),
    tok("tok_clip@448", 3585, Some(448), Some(16), false),
];

/// Look a domain up by its 4M name.
pub fn modality_info(name: &str) -> Option<&'static ModalityInfo> {
    MODALITIES.iter().find(|m| m.name == name)
}

/// The 19 domains of the released 4M-21 configs, in their `domains_in` order.
pub const FOURM21_DOMAINS: &[&str] = &[
    "caption",
    "t5_caption",
    "det",
    "metadata",
    "human_poses",
    "color_palette",
    "sam_instance",
    "rgb@224",
    "tok_rgb@224",
    "tok_normal@224",
    "tok_depth@224",
    "tok_semseg@224",
    "tok_clip@224",
    "tok_dinov2@224",
    "tok_dinov2_global",
    "tok_imagebind@224",
    "tok_imagebind_global",
    "tok_sam_edge@224",
    "tok_canny_edge@224",
];
