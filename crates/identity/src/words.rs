//! The 256 words of pairing codes and short authentication strings.
//!
//! Each word stands for one byte. They are common, distinct English nouns of
//! 3 to 8 letters, so they are easy to read aloud and to type.

pub const WORDS: [&str; 256] = [
    "acid", "acorn", "actor", "adobe", "agent", "alarm", "album", "alert", "alley", "alpha", "amber", "anchor",
    "angle", "ankle", "apple", "april", "apron", "arena", "arrow", "aspen", "atlas", "attic", "audio", "autumn",
    "avenue", "bacon", "badge", "bagel", "baker", "bamboo", "banjo", "barn", "basil", "basin", "beach", "beacon",
    "beard", "beaver", "bell", "bench", "berry", "bicycle", "birch", "bison", "blade", "blanket", "blossom", "boat",
    "bonfire", "bottle", "boulder", "branch", "bread", "breeze", "brick", "bridge", "brook", "bucket", "buffalo",
    "butter", "cabin", "cable", "cactus", "camel", "camera", "candle", "canoe", "canyon", "carbon", "carpet", "castle",
    "cedar", "cellar", "cello", "chalk", "cherry", "chess", "chimney", "cider", "cinema", "circus", "citrus", "cliff",
    "clock", "cloud", "clover", "cobalt", "cocoa", "comet", "compass", "copper", "coral", "cotton", "cradle", "crater",
    "crayon", "cricket", "crystal", "cupboard", "curtain", "cyclone", "daisy", "dancer", "delta", "denim", "desert",
    "diamond", "dolphin", "domino", "dragon", "drum", "eagle", "earth", "echo", "eclipse", "elbow", "ember", "engine",
    "falcon", "feather", "fence", "fern", "ferry", "fiddle", "flame", "flint", "forest", "fossil", "fountain", "fox",
    "galaxy", "garden", "garlic", "geyser", "ginger", "glacier", "globe", "goose", "granite", "grape", "gravel",
    "harbor", "harvest", "hazel", "helmet", "heron", "hollow", "honey", "horizon", "iceberg", "igloo", "island",
    "ivory", "jacket", "jasmine", "jelly", "jigsaw", "jungle", "kayak", "kettle", "kiwi", "ladder", "lagoon",
    "lantern", "lemon", "lilac", "linen", "lizard", "lobster", "locket", "magnet", "mango", "maple", "marble",
    "meadow", "melon", "mirror", "mitten", "monsoon", "mosaic", "moss", "muffin", "napkin", "nectar", "needle",
    "nickel", "noodle", "nutmeg", "oasis", "ocean", "olive", "onion", "orbit", "orchid", "otter", "oyster", "paddle",
    "palace", "panda", "paper", "parrot", "pebble", "pepper", "piano", "pillow", "pirate", "planet", "plum", "pocket",
    "pond", "poppy", "prairie", "pretzel", "puzzle", "quartz", "quill", "rabbit", "radar", "raven", "reef", "ribbon",
    "river", "robin", "rocket", "saddle", "salmon", "sandal", "satin", "sauce", "scarf", "shadow", "shell", "signal",
    "silver", "sketch", "sparrow", "spider", "spruce", "squash", "statue", "stone", "storm", "summit", "sunset",
    "swan", "tablet", "tango", "teapot", "thistle", "thunder", "tiger", "timber", "toast", "tomato", "tulip", "tunnel",
];

/// The index of `word` (case-insensitive), if it is in the list.
pub fn index_of(word: &str) -> Option<u8> {
    let word = word.to_ascii_lowercase();
    WORDS.iter().position(|w| *w == word).map(|i| i as u8)
}

#[cfg(test)]
mod tests {
    #[test]
    fn words_are_distinct_lowercase_and_short() {
        let mut sorted = super::WORDS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
        assert!(super::WORDS.iter().all(|w| (3..=8).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase())));
    }
}
