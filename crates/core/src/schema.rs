//! The synced tables and their fields, described once.
//!
//! Everything table-shaped in Roost is generated from these descriptors: the
//! SQL the write door runs, the MCP tools' input schemas and descriptions, the
//! CLI's field handling. Adding a field is one line here plus a migration.

use serde::{Deserialize, Serialize};

/// A table whose rows replicate between instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Memories,
    Projects,
    Sources,
    Notes,
    BlogPosts,
    Contacts,
    Settings,
    AgentState,
    AgentMessages,
}

/// What values a field holds and how they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// One line of text, at most this many characters.
    Line(usize),
    /// Free text of any length up to the content limit (markdown welcome).
    Text,
    /// An integer within an inclusive range.
    Int { min: i64, max: i64 },
    /// A list of short labels, stored as a JSON array of strings.
    Labels,
    /// One of a fixed set of values.
    Choice(&'static [&'static str]),
    /// true or false.
    Flag,
    /// A date or date-time: YYYY, YYYY-MM, YYYY-MM-DD or RFC 3339.
    Date,
    /// An http(s) URL.
    Url,
    /// A URL-safe identifier: lowercase letters, digits and dashes.
    Slug,
    /// The id or name of a project; stored as the project's id.
    ProjectRef,
}

/// One column of a synced table, as the outside world sees it.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: FieldKind,
    /// Must be given when the row is created.
    pub required: bool,
    /// Value used at creation when none is given.
    pub default: Option<&'static str>,
    /// Cannot change after creation (it is part of the row's identity).
    pub immutable: bool,
    /// `list` can filter on this field by equality.
    pub filterable: bool,
    /// Must be unique among the table's live rows.
    pub unique: bool,
    pub doc: &'static str,
}

impl Field {
    const fn new(name: &'static str, kind: FieldKind, doc: &'static str) -> Field {
        Field { name, kind, required: false, default: None, immutable: false, filterable: false, unique: false, doc }
    }
    const fn required(mut self) -> Field {
        self.required = true;
        self
    }
    const fn default(mut self, value: &'static str) -> Field {
        self.default = Some(value);
        self
    }
    const fn filterable(mut self) -> Field {
        self.filterable = true;
        self
    }
    const fn unique(mut self) -> Field {
        self.unique = true;
        self
    }
    const fn immutable(mut self) -> Field {
        self.immutable = true;
        self
    }
}

/// Longest accepted text value, in bytes. Large enough for long notes and
/// pasted documents, small enough that one row never dominates a sync batch.
pub const MAX_TEXT_BYTES: usize = 1024 * 1024;
/// Most labels on one row, and the longest label.
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_CHARS: usize = 64;

const TAGS: Field = Field::new("tags", FieldKind::Labels, "Short labels for grouping and filtering.");
/// Scope, decided at creation: a local row stays on the instance that wrote it.
const LOCAL: Field = Field::new(
    "local",
    FieldKind::Flag,
    "true: kept on this instance only, never synced; false (default): shared by every instance.",
)
.default("false")
.filterable()
.immutable();
const PROJECT: Field =
    Field::new("project", FieldKind::ProjectRef, "Project this belongs to: the project's id or exact name.")
        .filterable();

const MEMORY_FIELDS: &[Field] = &[
    Field::new("content", FieldKind::Text, "The fact, preference, event or insight to remember, in plain words.")
        .required(),
    Field::new(
        "category",
        FieldKind::Line(64),
        "Broad kind, e.g. general, preference, person, project, decision, learning.",
    )
    .default("general")
    .filterable(),
    Field::new("context", FieldKind::Text, "Why this matters or where it came from."),
    TAGS,
    Field::new("source", FieldKind::Line(500), "Where the information came from (conversation, URL, document)."),
    Field::new("importance", FieldKind::Int { min: 1, max: 10 }, "1 (trivia) to 10 (critical); default 5.")
        .default("5"),
    PROJECT,
    LOCAL,
];

const PROJECT_FIELDS: &[Field] = &[
    Field::new("name", FieldKind::Line(200), "Unique project name.").required().unique(),
    Field::new("description", FieldKind::Text, "What the project is about."),
    Field::new("status", FieldKind::Choice(&["active", "paused", "done", "archived"]), "Lifecycle state.")
        .default("active")
        .filterable(),
    TAGS,
    LOCAL,
];

const SOURCE_FIELDS: &[Field] = &[
    Field::new("title", FieldKind::Line(500), "Title of the work.").required(),
    Field::new("authors", FieldKind::Labels, "Authors, one name per entry."),
    Field::new("url", FieldKind::Url, "Where to find it (http or https)."),
    Field::new("published", FieldKind::Date, "Publication date: YYYY, YYYY-MM or YYYY-MM-DD."),
    Field::new(
        "kind",
        FieldKind::Choice(&["article", "book", "paper", "web", "video", "podcast", "dataset", "other"]),
        "What sort of source it is.",
    )
    .default("web")
    .filterable(),
    PROJECT,
    Field::new("notes", FieldKind::Text, "Your notes on the source."),
    TAGS,
    LOCAL,
];

const NOTE_FIELDS: &[Field] = &[
    Field::new("title", FieldKind::Line(500), "Optional title."),
    Field::new("body", FieldKind::Text, "The note itself (markdown welcome).").required(),
    PROJECT,
    TAGS,
    LOCAL,
];

const BLOG_POST_FIELDS: &[Field] = &[
    Field::new(
        "slug",
        FieldKind::Slug,
        "URL name: lowercase letters, digits and dashes; made from the title when omitted.",
    )
    .unique(),
    Field::new("title", FieldKind::Line(500), "Post title.").required(),
    Field::new("body", FieldKind::Text, "Post body in markdown."),
    Field::new(
        "status",
        FieldKind::Choice(&["draft", "published"]),
        "draft or published; publishing stamps published_at.",
    )
    .default("draft")
    .filterable(),
    Field::new("published_at", FieldKind::Date, "When it was published (set automatically on publish)."),
    TAGS,
    LOCAL,
];

const CONTACT_FIELDS: &[Field] = &[
    Field::new("name", FieldKind::Line(300), "Person's or organisation's name.").required(),
    Field::new("email", FieldKind::Line(320), "Email address."),
    Field::new("phone", FieldKind::Line(64), "Phone number."),
    Field::new("organization", FieldKind::Line(300), "Where they work or belong.").filterable(),
    Field::new("notes", FieldKind::Text, "Anything worth remembering about them."),
    TAGS,
    LOCAL,
];

const SETTING_FIELDS: &[Field] = &[
    Field::new("key", FieldKind::Line(200), "Setting name, e.g. ui.theme.").required().unique().immutable(),
    Field::new("value", FieldKind::Text, "Setting value (any text; JSON welcome).").required(),
    LOCAL,
];

/// The field of an agent-owned row that holds the lease epoch it was written
/// under (see [`Table::agent_owned`]).
pub const EPOCH: &str = "epoch";

const AGENT_STATE_FIELDS: &[Field] = &[
    Field::new("key", FieldKind::Line(200), "What the awake machine keeps under this name.")
        .required()
        .unique()
        .immutable(),
    Field::new("value", FieldKind::Text, "The state itself (any text; JSON welcome).").required(),
    Field::new(EPOCH, FieldKind::Int { min: 1, max: i64::MAX }, "Lease epoch of the write.").required(),
];

/// An inbound message of the agent, recorded by whichever machine received it
/// (the row's origin).
const AGENT_MESSAGE_FIELDS: &[Field] = &[
    Field::new("key", FieldKind::Line(300), "The channel and the channel's message id: one row per message.")
        .required()
        .unique()
        .immutable(),
    Field::new("channel", FieldKind::Line(32), "Where the message came from (webhook, telegram, cli).")
        .required()
        .immutable()
        .filterable(),
    Field::new("topic", FieldKind::Line(200), "The conversation it belongs to.").required().immutable().filterable(),
    Field::new("message_id", FieldKind::Line(200), "The channel's own id of the message.").required().immutable(),
    Field::new("sender", FieldKind::Line(200), "Who sent it, as the channel names them.").immutable(),
    Field::new("text", FieldKind::Text, "The message, with secrets redacted.").required().immutable(),
];

impl Table {
    pub const ALL: [Table; 9] = [
        Table::Memories,
        Table::Projects,
        Table::Sources,
        Table::Notes,
        Table::BlogPosts,
        Table::Contacts,
        Table::Settings,
        Table::AgentState,
        Table::AgentMessages,
    ];

    /// The SQL table name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Memories => "memories",
            Table::Projects => "projects",
            Table::Sources => "sources",
            Table::Notes => "notes",
            Table::BlogPosts => "blog_posts",
            Table::Contacts => "contacts",
            Table::Settings => "settings",
            Table::AgentState => "agent_state",
            Table::AgentMessages => "agent_messages",
        }
    }

    /// One row of this table in words ("memory", "blog post").
    pub fn singular(self) -> &'static str {
        match self {
            Table::Memories => "memory",
            Table::Projects => "project",
            Table::Sources => "source",
            Table::Notes => "note",
            Table::BlogPosts => "blog_post",
            Table::Contacts => "contact",
            Table::Settings => "setting",
            Table::AgentState => "agent_state",
            Table::AgentMessages => "agent_message",
        }
    }

    pub fn parse(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn fields(self) -> &'static [Field] {
        match self {
            Table::Memories => MEMORY_FIELDS,
            Table::Projects => PROJECT_FIELDS,
            Table::Sources => SOURCE_FIELDS,
            Table::Notes => NOTE_FIELDS,
            Table::BlogPosts => BLOG_POST_FIELDS,
            Table::Contacts => CONTACT_FIELDS,
            Table::Settings => SETTING_FIELDS,
            Table::AgentState => AGENT_STATE_FIELDS,
            Table::AgentMessages => AGENT_MESSAGE_FIELDS,
        }
    }

    pub fn field(self, name: &str) -> Option<&'static Field> {
        self.fields().iter().find(|f| f.name == name)
    }

    /// The field whose value names the row (besides its id), if any.
    pub fn natural_key(self) -> Option<&'static Field> {
        self.fields().iter().find(|f| f.unique)
    }

    /// Whether a row's id is derived from its natural key, so that the same
    /// key created on two instances is the same row.
    pub fn id_from_key(self) -> bool {
        matches!(self, Table::Settings | Table::AgentState | Table::AgentMessages)
    }

    /// Whether the table holds state of the awake role: written only by the
    /// machine holding the lease, each write stamped with its epoch
    /// ([`EPOCH`]) and refused below the highest epoch seen, never by people
    /// or their tools (no MCP tool or CLI command is generated for it).
    /// Replication ranks its versions by epoch first (`crate::sync`), so a
    /// machine that wrongly believes it still holds the lease cannot
    /// overwrite the real holder's writes.
    pub fn agent_owned(self) -> bool {
        matches!(self, Table::AgentState)
    }

    /// Whether people and their tools read and write it (MCP tools and CLI
    /// commands are generated for it). The agent's tables are the agent's:
    /// inbound messages are recorded by the channels, replies by the holder.
    pub fn for_people(self) -> bool {
        !matches!(self, Table::AgentState | Table::AgentMessages)
    }

    /// One-sentence description of what a row is, for tool descriptions.
    pub fn about(self) -> &'static str {
        match self {
            Table::Memories => "a memory: a durable fact, preference or insight worth recalling in later conversations",
            Table::Projects => "a project: a named workstream that memories, notes and sources can belong to",
            Table::Sources => "a source: a citation (article, book, paper, web page) with its bibliographic fields",
            Table::Notes => "a note: free-form text, attached to a project or standing alone",
            Table::BlogPosts => "a blog post: a markdown article with a slug, draft or published",
            Table::Contacts => "a contact: a person or organisation with how to reach them",
            Table::Settings => "a setting: a key and value, either shared by all instances or local to this one",
            Table::AgentState => "agent state: a key and value kept by the machine holding the lease, with its epoch",
            Table::AgentMessages => "an agent message: one inbound message of a conversation, from any channel",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_consistent() {
        for table in Table::ALL {
            assert_eq!(Table::parse(table.name()), Some(table));
            let mut names: Vec<_> = table.fields().iter().map(|f| f.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), table.fields().len(), "{} has a duplicate field", table.name());
            assert!(table.fields().iter().any(|f| f.required), "{} needs a required field", table.name());
            assert!(table.fields().iter().filter(|f| f.unique).count() <= 1);
            if table.agent_owned() {
                let epoch = table.field(EPOCH).expect("agent-owned tables carry an epoch");
                assert!(epoch.required && matches!(epoch.kind, FieldKind::Int { min: 1, .. }));
                assert!(table.natural_key().is_some_and(|k| k.immutable), "agent state is found by its key");
                assert!(table.id_from_key(), "one key is one row everywhere, so its versions meet the fence");
                assert!(table.field("local").is_none(), "agent state replicates");
            }
        }
    }
}
