//! Recognising a request to move a conversation to another machine ("move
//! this to the mini", "move it back here", "run this on the vps") by a
//! fixed grammar, not a model: the same words always mean the same move,
//! and anything else is an ordinary message for the handler.
//!
//! The grammar, case-insensitive, with surrounding spaces and a trailing
//! `.`, `!` or `?` ignored, and an optional leading `please`:
//!
//! ```text
//! VERB [OBJECT] ["back"] (PREP TARGET | "here") [TAIL]
//! VERB   = move | run | transfer | switch | send
//! OBJECT = this | it | this topic | this conversation | this chat
//!        | the topic | the conversation | the chat
//! PREP   = to | on | onto | over to
//! TARGET = here | this machine | [the] NICKNAME
//! TAIL   = please | instead | now
//! ```
//!
//! `move back here` and `move it here` name this machine; `run this on the
//! vps` names the machine nicknamed `vps`. A nickname may have several
//! words ("the mac mini").

/// What a message asks, if it is a move request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveRequest {
    /// Move the conversation to the machine with this nickname (as the
    /// nickname set spells it).
    To(String),
    /// The phrasing is a move request, but no machine has that nickname.
    NoSuchMachine(String),
}

const VERBS: [&str; 5] = ["move", "run", "transfer", "switch", "send"];
const OBJECTS: [&str; 8] =
    ["this topic", "this conversation", "this chat", "the topic", "the conversation", "the chat", "this", "it"];
const PREPOSITIONS: [&str; 4] = ["over to", "onto", "to", "on"];
const HERE: [&str; 2] = ["this machine", "here"];
const TAILS: [&str; 3] = ["please", "instead", "now"];

/// Whether `text` asks to move the conversation, and where. `nicknames` are
/// the machines' nicknames; `here` is this machine's, which "here" means.
/// None: not a move request, so an ordinary message.
pub fn parse_move(text: &str, nicknames: &[&str], here: &str) -> Option<MoveRequest> {
    let words: Vec<String> = text
        .trim()
        .trim_end_matches(['.', '!', '?'])
        .split_whitespace()
        .map(|w| w.trim_end_matches(',').to_lowercase())
        .collect();
    let mut rest: &[String] = &words;
    rest = strip(rest, "please").unwrap_or(rest);
    rest = VERBS.iter().find_map(|verb| strip(rest, verb))?;
    rest = OBJECTS.iter().find_map(|object| strip(rest, object)).unwrap_or(rest);
    rest = strip(rest, "back").unwrap_or(rest);
    let after_preposition = PREPOSITIONS.iter().find_map(|preposition| strip(rest, preposition));
    let without_preposition = after_preposition.is_none();
    rest = after_preposition.unwrap_or(rest);
    while let Some(shorter) = TAILS.iter().find_map(|tail| strip_end(rest, tail)) {
        rest = shorter;
    }
    // Only "here" goes without a preposition: "move it back here".
    if without_preposition && !same(rest, "here") {
        return None;
    }
    if rest.is_empty() {
        return None;
    }
    if HERE.iter().any(|h| same(rest, h)) {
        return Some(MoveRequest::To(here.to_string()));
    }
    let named = strip(rest, "the").filter(|n| !n.is_empty()).unwrap_or(rest);
    let asked = named.join(" ");
    let found = nicknames.iter().chain(std::iter::once(&here)).find(|n| normalised(n) == asked);
    Some(match found {
        Some(nickname) => MoveRequest::To(nickname.to_string()),
        None => MoveRequest::NoSuchMachine(asked),
    })
}

/// A nickname as the parser compares it: lowercase, single spaces.
fn normalised(nickname: &str) -> String {
    nickname.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ")
}

/// `words` without the leading `phrase` (one or more words), if it starts so.
fn strip<'a>(words: &'a [String], phrase: &str) -> Option<&'a [String]> {
    let phrase: Vec<&str> = phrase.split(' ').collect();
    let starts = words.len() >= phrase.len() && words.iter().zip(&phrase).all(|(w, p)| w == p);
    starts.then(|| &words[phrase.len()..])
}

/// `words` without the trailing `phrase`, if it ends so (and more is left).
fn strip_end<'a>(words: &'a [String], phrase: &str) -> Option<&'a [String]> {
    let phrase: Vec<&str> = phrase.split(' ').collect();
    let n = phrase.len();
    let ends = words.len() > n && words[words.len() - n..].iter().zip(&phrase).all(|(w, p)| w == p);
    ends.then(|| &words[..words.len() - n])
}

fn same(words: &[String], phrase: &str) -> bool {
    strip(words, phrase).is_some_and(<[String]>::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MACHINES: [&str; 4] = ["mini", "vps", "laptop", "Mac Mini Pro"];

    fn parsed(text: &str) -> Option<MoveRequest> {
        parse_move(text, &MACHINES, "home")
    }

    fn to(nickname: &str) -> Option<MoveRequest> {
        Some(MoveRequest::To(nickname.to_string()))
    }

    #[test]
    fn the_phrasings_people_use_name_the_machine() {
        assert_eq!(parsed("move this to the mini"), to("mini"));
        assert_eq!(parsed("Move it back here."), to("home"));
        assert_eq!(parsed("run this on the vps"), to("vps"));
        assert_eq!(parsed("please move this conversation over to the laptop!"), to("laptop"));
        assert_eq!(parsed("move to laptop"), to("laptop"));
        assert_eq!(parsed("switch back to this machine please"), to("home"));
        assert_eq!(parsed("move this to the mac mini pro"), to("Mac Mini Pro"));
        assert_eq!(parsed("move it to home"), to("home"));
        assert_eq!(parsed("move here now"), to("home"));
    }

    #[test]
    fn a_move_to_an_unknown_machine_says_which_name_was_asked() {
        assert_eq!(parsed("move this to the toaster"), Some(MoveRequest::NoSuchMachine("toaster".into())));
    }

    #[test]
    fn ordinary_messages_fall_through() {
        for text in [
            "",
            "move",
            "move this",
            "how do I move this to the mini?",
            "can you run the tests on the vps",
            "I moved it to the laptop",
            "move this to",
            "move this mini",
            "run the tests",
            "the mini is slow today",
        ] {
            assert_eq!(parsed(text), None, "{text:?}");
        }
    }

    /// A phrasing from the grammar naming `target`.
    fn phrasing(target: &'static str) -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            prop::sample::select(VERBS.to_vec()),
            prop::option::of(prop::sample::select(OBJECTS.to_vec())),
            any::<bool>(),
            prop::sample::select(PREPOSITIONS.to_vec()),
            any::<bool>(),
            prop::option::of(prop::sample::select(TAILS.to_vec())),
            prop::sample::select(vec!["", ".", "!", "?"]),
        )
            .prop_map(move |(please, verb, object, back, preposition, the, tail, end)| {
                let mut words = Vec::new();
                if please {
                    words.push("please");
                }
                words.push(verb);
                words.extend(object);
                if back {
                    words.push("back");
                }
                words.push(preposition);
                if the && !HERE.contains(&target) {
                    words.push("the");
                }
                words.push(target);
                words.extend(tail);
                format!("{}{end}", words.join(" "))
            })
    }

    /// `text` with each letter's case chosen by `upper` and the spaces
    /// between words widened by `spaces`.
    fn shaken(text: &str, upper: &[bool], spaces: usize) -> String {
        let cased: String = text
            .chars()
            .zip(upper.iter().cycle())
            .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
            .collect();
        format!("  {}  ", cased.split(' ').collect::<Vec<_>>().join(&" ".repeat(spaces.max(1))))
    }

    proptest! {
        #[test]
        fn every_phrasing_of_the_grammar_names_its_machine(
            (target, text) in prop::sample::select(MACHINES.to_vec()).prop_flat_map(|t| (Just(t), phrasing(t))),
            upper in prop::collection::vec(any::<bool>(), 1..8),
            spaces in 1usize..4,
        ) {
            prop_assert_eq!(parsed(&shaken(&text, &upper, spaces)), to(target));
        }

        #[test]
        fn here_always_means_this_machine(text in phrasing("here"), own in "[a-z]{1,12}") {
            prop_assert_eq!(parse_move(&text, &MACHINES, &own), Some(MoveRequest::To(own)));
        }

        #[test]
        fn text_not_starting_with_a_verb_is_never_a_move(text in "\\PC{0,60}") {
            let first = text.split_whitespace().next().unwrap_or("").to_lowercase();
            prop_assume!(first != "please" && !VERBS.contains(&first.as_str()));
            prop_assert_eq!(parsed(&text), None);
        }

        #[test]
        fn any_text_is_answered_without_panicking(text in "\\PC{0,200}") {
            let _ = parsed(&text);
        }

        /// Whether a text is a move request does not depend on the names:
        /// the shell asks first with none, before reading the machines.
        #[test]
        fn the_names_never_decide_whether_a_text_is_a_move(
            text in prop_oneof![phrasing("mini"), phrasing("here"), "\\PC{0,60}"],
        ) {
            prop_assert_eq!(parsed(&text).is_some(), parse_move(&text, &[], "").is_some());
        }
    }
}
