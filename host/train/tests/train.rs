//! Training tests, a module per feature.

mod vocab {
    //! The project's own vocabulary: 4M layout, lossless on unseen captions, equal to the HF
    //! tokenizer it was trained with, usable by the det serialiser, reproducible.

    use std::sync::OnceLock;

    use tessera_text::{DetOptions, DetectionBox, TextTokenizer, TokenKind};
    use tessera_train::{VocabOptions, special_tokens, train_vocab, world_corpus};

    fn options() -> VocabOptions {
        VocabOptions {
            scenes: 300,
            ..VocabOptions::default()
        }
    }

    fn trained() -> &'static str {
        static JSON: OnceLock<String> = OnceLock::new();
        JSON.get_or_init(|| {
            let corpus = world_corpus(&options()).unwrap();
            train_vocab(&corpus, &options()).unwrap()
        })
    }

    fn held_out_captions() -> Vec<String> {
        world_corpus(&VocabOptions {
            scenes: 100,
            first_seed: 1_000_000,
            ..VocabOptions::default()
        })
        .unwrap()
    }

    #[test]
    fn added_tokens_have_the_4m_layout() {
        let tokenizer = TextTokenizer::from_json_bytes(trained().as_bytes()).unwrap();
        let id = |token: &str| tokenizer.token_to_id(token).unwrap();
        assert_eq!(
            [id("[PAD]"), id("[UNK]"), id("[SOS]"), id("[EOS]")],
            [0, 1, 2, 3]
        );
        assert_eq!(id("[S_0]"), 4);
        assert_eq!(id("[S_199]"), 203);
        assert_eq!(id("v0=0"), 204);
        assert_eq!(id("v1=0"), 1204);
        assert_eq!(id("v3=999"), 4203);
        assert_eq!(tokenizer.layout().kind(4204), TokenKind::Class(0));
        let classes: Vec<&str> = (4204..4208)
            .map(|i| tokenizer.id_to_token(i).unwrap())
            .collect();
        assert_eq!(classes, ["sphere", "cube", "cylinder", "cone"]);
        assert_eq!(special_tokens().len(), 4208);
        assert!(tokenizer.vocab_size() > 4208, "word pieces were learned");
        assert!(tokenizer.vocab_size() <= options().vocab_size);
    }

    #[test]
    fn unseen_captions_encode_without_unknowns_and_decode_back() {
        let tokenizer = TextTokenizer::from_json_bytes(trained().as_bytes()).unwrap();
        for caption in held_out_captions() {
            let ids = tokenizer.encode(&caption);
            assert!(!ids.contains(&1), "[UNK] in {caption:?}: {ids:?}");
            let words = |text: &str| -> Vec<String> {
                text.to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .map(str::to_owned)
                    .collect()
            };
            assert_eq!(
                words(&tokenizer.decode(&ids)),
                words(&caption),
                "{caption:?}"
            );
        }
    }

    #[test]
    fn words_outside_the_world_still_encode_without_unknowns() {
        let tokenizer = TextTokenizer::from_json_bytes(trained().as_bytes()).unwrap();
        for text in ["a quiz about 42 kayaks!", "zebra-jukebox (v2)", "x_y@z.org"] {
            let ids = tokenizer.encode(text);
            assert!(!ids.contains(&1), "[UNK] in {text:?}: {ids:?}");
            assert_eq!(
                tokenizer.decode(&ids).replace(' ', ""),
                text.replace(' ', "")
            );
        }
    }

    #[test]
    fn the_plugins_tokenizer_agrees_with_the_trainers_tokenizer() {
        let ours = TextTokenizer::from_json_bytes(trained().as_bytes()).unwrap();
        let reference: tokenizers::Tokenizer = trained().parse().unwrap();
        let mut texts = held_out_captions();
        texts.push("v0=12 v1=40 v2=300 v3=999 cube [S_1] a red sphere [EOS]".into());
        for text in texts {
            let expected = reference.encode(text.as_str(), false).unwrap();
            assert_eq!(ours.encode(&text), expected.get_ids(), "{text:?}");
        }
    }

    #[test]
    fn world_boxes_serialise_with_the_class_tokens() {
        let tokenizer = TextTokenizer::from_json_bytes(trained().as_bytes()).unwrap();
        let scene = tessera_world::generate_scene(1_000_001).unwrap();
        let boxes: Vec<DetectionBox> = scene
            .boxes
            .iter()
            .map(|b| DetectionBox {
                label: b.label.clone(),
                xmin: b.normalized_box[0],
                ymin: b.normalized_box[1],
                xmax: b.normalized_box[2].min(1.0),
                ymax: b.normalized_box[3].min(1.0),
                score: None,
            })
            .collect();
        assert!(!boxes.is_empty());
        let ids = tessera_text::det::det_to_ids(&tokenizer, &boxes, DetOptions::default()).unwrap();
        let decoded = tessera_text::det::ids_to_det(&tokenizer, &ids);
        assert_eq!(decoded.boxes.len(), boxes.len());
        assert!(decoded.skipped.is_empty());
    }

    #[test]
    fn training_is_reproducible() {
        let corpus = world_corpus(&options()).unwrap();
        assert_eq!(train_vocab(&corpus, &options()).unwrap(), trained());
    }

    #[test]
    fn bad_options_are_refused() {
        let empty = world_corpus(&VocabOptions {
            scenes: 0,
            ..VocabOptions::default()
        });
        assert!(empty.unwrap_err().to_string().contains("empty"));
        let small = train_vocab(
            &["a cube".to_owned()],
            &VocabOptions {
                vocab_size: 100,
                ..VocabOptions::default()
            },
        );
        assert!(small.unwrap_err().to_string().contains("4208 added tokens"));
    }
}
