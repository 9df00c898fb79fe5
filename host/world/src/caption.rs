//! Captions from a small grammar. Objects are named by size, colour and shape ("a large red sphere");
//! every spatial relation a caption states holds in the rendered image by the definitions in
//! [`Relation::holds`], which look only at the objects' visible bounding boxes (and, for front/behind,
//! agree with the true 3-D distances as well).

use crate::boxes::BoundingBox;
use crate::rng::SceneRng;
use crate::scene::SceneSpec;

/// Objects with fewer visible pixels than this are too small to talk about.
pub const MIN_MENTIONED_PIXELS: u32 = 40;
/// Horizontal gap between box centres (pixels) needed for "left of" / "right of".
pub const MIN_HORIZONTAL_SEPARATION: f64 = 12.0;
/// Gap between the boxes' bottom edges (pixels) needed for "in front of" / "behind".
pub const MIN_DEPTH_SEPARATION: u32 = 6;

/// A spatial relation between a subject and an object of a sentence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    LeftOf,
    RightOf,
    InFrontOf,
    Behind,
}

impl Relation {
    pub const ALL: [Relation; 4] = [
        Relation::LeftOf,
        Relation::RightOf,
        Relation::InFrontOf,
        Relation::Behind,
    ];

    /// Whether `subject` stands in this relation to `object`, judged on their visible boxes:
    /// - left of: the subject's box starts and ends further left, and its centre is at least
    ///   [`MIN_HORIZONTAL_SEPARATION`] pixels left of the object's centre; right of mirrors it;
    /// - in front of: the subject's box reaches at least [`MIN_DEPTH_SEPARATION`] pixels lower in the
    ///   image (objects stand on the floor and the camera looks down, so lower means nearer); behind
    ///   mirrors it.
    pub fn holds(self, subject: &BoundingBox, object: &BoundingBox) -> bool {
        let (s, o) = (&subject.pixel_box, &object.pixel_box);
        match self {
            Relation::LeftOf => {
                s[0] < o[0]
                    && s[2] < o[2]
                    && subject.centre_x() + MIN_HORIZONTAL_SEPARATION <= object.centre_x()
            }
            Relation::RightOf => Relation::LeftOf.holds(object, subject),
            Relation::InFrontOf => s[3] >= o[3] + MIN_DEPTH_SEPARATION,
            Relation::Behind => Relation::InFrontOf.holds(object, subject),
        }
    }

    /// The phrasings the grammar may use; every one contains the relation's key word.
    fn phrasings(self) -> &'static [&'static str] {
        match self {
            Relation::LeftOf => &["to the left of", "left of"],
            Relation::RightOf => &["to the right of", "right of"],
            Relation::InFrontOf => &["in front of"],
            Relation::Behind => &["behind"],
        }
    }
}

/// Seeds the caption's own random stream, so that phrasing choices do not disturb scene sampling.
const CAPTION_STREAM: u64 = 0xCA97_10A5;

/// Writes the caption of a rendered scene from its boxes (boxes must come from the same scene).
pub fn caption_for(scene: &SceneSpec, boxes: &[BoundingBox]) -> String {
    let mut rng = SceneRng::new(scene.seed ^ CAPTION_STREAM);
    // Mention objects in the order the `det` sequence lists their boxes, so that the k-th object
    // a caption names is (up to unmentioned specks) the k-th box: generating boxes from a caption
    // is then a copy in order, not a matching of a list against a differently sorted one.
    let mut mentioned: Vec<&BoundingBox> = boxes
        .iter()
        .filter(|bounding_box| bounding_box.visible_pixels >= MIN_MENTIONED_PIXELS)
        .collect();
    mentioned.sort_by(|a, b| a.det_order(b));
    let front_behind_agrees_in_3d = |subject: &BoundingBox, object: &BoundingBox| {
        camera_distance(scene, subject.instance_id) < camera_distance(scene, object.instance_id)
    };
    let true_relations = |subject: &BoundingBox, object: &BoundingBox| -> Vec<Relation> {
        Relation::ALL
            .into_iter()
            .filter(|relation| relation.holds(subject, object))
            .filter(|relation| match relation {
                Relation::InFrontOf => front_behind_agrees_in_3d(subject, object),
                Relation::Behind => front_behind_agrees_in_3d(object, subject),
                _ => true,
            })
            .collect()
    };

    let mut sentences: Vec<String> = Vec::new();
    match mentioned.len() {
        0 => {
            let options = [
                "an empty floor by a wall.",
                "a plain room with nothing in it.",
                "an empty scene.",
            ];
            sentences.push(options[rng.below(options.len())].to_string());
        }
        1 => {
            let name = describe(mentioned[0]);
            let options = [
                format!("a {name} on the floor."),
                format!("a single {name} by a wall."),
                format!("there is a {name}."),
                format!("a photo of a {name}."),
            ];
            sentences.push(options[rng.below(options.len())].clone());
        }
        count => {
            let all_objects_mentioned = count == boxes.len();
            let listed = all_objects_mentioned && rng.chance(0.4);
            if listed {
                let names: Vec<String> = mentioned
                    .iter()
                    .map(|b| format!("a {}", describe(b)))
                    .collect();
                let (init, last) = names.split_at(names.len() - 1);
                sentences.push(format!(
                    "{} objects: {} and {}.",
                    count_word(count),
                    init.join(", "),
                    last[0]
                ));
            }
            // Without a list, introduce every object in a sentence relating it to another one (with a
            // true relation); after a list, add up to two relation sentences.
            let mut introduced = vec![listed; count];
            let mut relation_sentences = 0;
            // Pairs already related, so that no sentence restates another one the other way round.
            let mut related_pairs: Vec<(usize, usize)> = Vec::new();
            for index in 0..count {
                let wants_sentence = if listed {
                    relation_sentences < 2
                } else {
                    !introduced[index]
                };
                if !wants_sentence {
                    continue;
                }
                let partners: Vec<usize> = (0..count)
                    .filter(|&other| {
                        other != index
                            && !related_pairs.contains(&(index.min(other), index.max(other)))
                    })
                    .collect();
                let mut options: Vec<(usize, Relation)> = Vec::new();
                for &partner in &partners {
                    for relation in true_relations(mentioned[index], mentioned[partner]) {
                        options.push((partner, relation));
                    }
                }
                if options.is_empty() {
                    if !listed {
                        sentences.push(format!("there is also a {}.", describe(mentioned[index])));
                        introduced[index] = true;
                    }
                    continue;
                }
                let (partner, relation) = options[rng.below(options.len())];
                let phrasing = relation.phrasings()[rng.below(relation.phrasings().len())];
                let subject = describe(mentioned[index]);
                let object = describe(mentioned[partner]);
                let sentence = match rng.below(3) {
                    0 => format!("a {subject} {phrasing} a {object}."),
                    1 => format!("there is a {subject} {phrasing} a {object}."),
                    _ => format!("the {subject} is {phrasing} the {object}."),
                };
                sentences.push(sentence);
                introduced[index] = true;
                introduced[partner] = true;
                relation_sentences += 1;
                related_pairs.push((index.min(partner), index.max(partner)));
                if sentences.len() >= 4 {
                    break;
                }
            }
        }
    }
    sentences.join(" ")
}

/// "large red sphere".
fn describe(bounding_box: &BoundingBox) -> String {
    format!(
        "{} {} {}",
        bounding_box.size, bounding_box.colour, bounding_box.label
    )
}

fn count_word(count: usize) -> &'static str {
    ["zero", "one", "two", "three", "four", "five", "six"]
        .get(count)
        .copied()
        .unwrap_or("many")
}

/// Distance from the camera to the centre of an object's footprint.
fn camera_distance(scene: &SceneSpec, instance_id: u8) -> f64 {
    scene
        .objects
        .iter()
        .find(|object| object.instance_id == instance_id)
        .map(|object| (object.base_centre() - scene.camera.frame.origin).length())
        .unwrap_or(f64::INFINITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(pixel_box: [u32; 4]) -> BoundingBox {
        BoundingBox {
            label: "cube".into(),
            instance_id: 1,
            colour: "red".into(),
            size: "small".into(),
            pixel_box,
            normalized_box: [0.0; 4],
            visible_pixels: 100,
        }
    }

    #[test]
    fn relations_follow_their_definitions() {
        let left = boxed([10, 50, 40, 90]);
        let right = boxed([60, 40, 90, 70]);
        assert!(Relation::LeftOf.holds(&left, &right));
        assert!(Relation::RightOf.holds(&right, &left));
        assert!(!Relation::LeftOf.holds(&right, &left));
        assert!(Relation::InFrontOf.holds(&left, &right));
        assert!(Relation::Behind.holds(&right, &left));
        let overlapping = boxed([15, 50, 45, 92]);
        assert!(
            !Relation::LeftOf.holds(&left, &overlapping),
            "centres 5 px apart are not 'left of'"
        );
        assert!(
            !Relation::InFrontOf.holds(&overlapping, &left),
            "bottoms 2 px apart are not 'in front of'"
        );
    }

    #[test]
    fn captions_vary_in_phrasing() {
        let mut openings = std::collections::HashSet::new();
        for seed in 0..30 {
            let scene = SceneSpec::from_seed(seed);
            let images = crate::render::render(&scene);
            let boxes = crate::boxes::boxes_from_instances(&scene, &images.instance);
            let caption = caption_for(&scene, &boxes);
            assert!(caption.ends_with('.'), "{caption}");
            openings.insert(caption.split_whitespace().next().unwrap().to_string());
        }
        assert!(openings.len() >= 3, "{openings:?}");
    }

    #[test]
    fn a_list_names_the_objects_in_the_order_of_their_boxes() {
        let mut lists = 0;
        for seed in 0..200 {
            let scene = SceneSpec::from_seed(seed);
            let images = crate::render::render(&scene);
            let boxes = crate::boxes::boxes_from_instances(&scene, &images.instance);
            let caption = caption_for(&scene, &boxes);
            let Some((_, rest)) = caption.split_once(" objects: ") else {
                continue;
            };
            let list = rest.split('.').next().unwrap();
            let named: Vec<String> = list
                .split(", ")
                .flat_map(|part| part.split(" and "))
                .map(|phrase| phrase.trim_start_matches("a ").to_string())
                .collect();
            let in_box_order: Vec<String> = boxes.iter().map(describe).collect();
            assert_eq!(named, in_box_order, "seed {seed}: {caption}");
            lists += 1;
        }
        assert!(lists >= 10, "only {lists} listing captions in 200 scenes");
    }
}
