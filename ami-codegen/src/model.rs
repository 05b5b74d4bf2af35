//! The catalog, turned into what the emitter writes: events, snapshots, enums, actions.

use crate::names::{pascal, snake, type_name};
use crate::Error;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// A field's inferred type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    /// Free text.
    Text,
    /// A decimal integer.
    Int,
    /// Two values, spelled (`yes`, `no`).
    Bool(String, String),
    /// A generated enum: the base name and the documented values.
    Enum(String, Vec<String>),
}

/// Counters, sizes and times that Asterisk prints with `%d`, whatever the event. (`Cause`
/// is not one: `PeerStatus` and `Registry` print it with `%s`, see [`INT_IN_EVENT`].)
const INT_FIELDS: &[&str] = &[
    "Abandoned",
    "Available",
    "BillableSeconds",
    "BridgeNumChannels",
    "Callers",
    "Calls",
    "CallsTaken",
    "Completed",
    "Count",
    "EventVersion",
    "HoldTime",
    "Holdtime",
    "Items",
    "LastCall",
    "LastPause",
    "LastReload",
    "ListItems",
    "LoggedIn",
    "LoginTime",
    "Logintime",
    "LongestHoldTime",
    "Max",
    "NewMessages",
    "OldMessages",
    "ParkingDuration",
    "ParkingTimeout",
    "Penalty",
    "Position",
    "Priority",
    "RingTime",
    "Seconds",
    "ServiceLevel",
    "TalkTime",
    "TechCause",
    "TimeToHangup",
    "Uptime",
    "UrgMessages",
    "Wait",
    "Weight",
    "Wrapuptime",
];

/// Names that are integers only in some events (`Duration` is `HH:MM:SS` in CoreShowChannel).
/// `Cause` is the Q.850 number (`%d`, `%jd` in `main/manager_channels.c`) in the hangup
/// events, but text in `PeerStatus` (`main/stasis_endpoints.c`: chan_iax2 sends `Expired`)
/// and `Registry` (`main/stasis_system.c`: `403 Forbidden`).
const INT_IN_EVENT: &[(&str, &str)] = &[
    ("Cdr", "Duration"),
    ("Hangup", "Cause"),
    ("HangupRequest", "Cause"),
    ("OriginateResponse", "Reason"),
    ("SoftHangupRequest", "Cause"),
];

/// Enum values Asterisk 22.10.1 sends that its docs leave out, added after the documented
/// ones: (owner, field, values), the owner an event or `channel snapshot`. Without them a
/// value every PJSIP qualify sends would come back as `Other`.
const MORE_VALUES: &[(&str, &str, &[&str])] = &[
    // `main/channel.c` `ast_state2str`: `AST_STATE_MUTE`.
    ("channel snapshot", "ChannelStateDesc", &["Mute"]),
    // `res/res_pjsip/pjsip_options.c` `status_map`: a contact with qualify off (`CREATED`).
    ("ContactStatus", "ContactStatus", &["NonQualified"]),
    // Qualify results: `res/res_pjsip/pjsip_configuration.c`, `channels/chan_iax2.c`.
    ("PeerStatus", "PeerStatus", &["Reachable", "Unreachable"]),
];

/// A catalog field's documented enum values (`None`: not an enum), with [`MORE_VALUES`].
fn enum_values(owner: &str, field: &str, f: &Value) -> Option<Vec<String>> {
    let mut values: Vec<String> = f["enum"].as_array()?.iter().filter_map(s).collect();
    for (o, name, more) in MORE_VALUES {
        if *o == owner && *name == field {
            values.extend(more.iter().map(|v| v.to_string()));
        }
    }
    Some(values)
}

/// Fields Asterisk 22.10.1 prints that the catalog leaves out, added after the catalog's:
/// (event, wire name, repeatable).
const MORE_FIELDS: &[(&str, &str, bool)] = &[
    // `main/manager_channels.c` `channel_hangup_request_cb`: `TechCause: %jd` after `Cause`.
    ("HangupRequest", "TechCause", false),
    ("SoftHangupRequest", "TechCause", false),
    // `main/manager.c` `append_channel_vars`: events raised with their channel (these two)
    // end in one `ChanVariable(<channel>): name=value` per `channelvars` variable, values
    // as they are. A `(*)` name stands for the family (`FieldSpec::matches`).
    ("OriginateResponse", "ChanVariable(*)", true),
    ("Rename", "ChanVariable(*)", true),
];

/// Undocumented events whose same-named fields have the types of a documented event.
const TYPES_FROM: &[(&str, &str)] = &[("QueueMember", "QueueMemberStatus")];

/// Headers outside any event's own field list (see `ami_types::spec::ENVELOPE`).
const ENVELOPE: &[&str] = &["Event", "Privilege", "ActionID", "SystemName", "Timestamp"];

/// Two-valued enums, spelled as the wire spells them.
const BOOLS: &[(&str, &str)] = &[
    ("1", "0"),
    ("Yes", "No"),
    ("yes", "no"),
    ("True", "False"),
    ("true", "false"),
    ("on", "off"),
];

/// The one place field types are decided; see the crate docs.
pub fn infer(event: &str, field: &str, values: Option<&[String]>) -> Ty {
    if let Some(values) = values.filter(|v| !v.is_empty()) {
        let set: BTreeSet<&str> = values.iter().map(String::as_str).collect();
        for (yes, no) in BOOLS {
            if set == BTreeSet::from([*yes, *no]) {
                return Ty::Bool(yes.to_string(), no.to_string());
            }
        }
        if values
            .iter()
            .all(|v| v.trim_start_matches('-').parse::<u64>().is_ok())
        {
            return Ty::Int;
        }
        return Ty::Enum(type_name(field), values.to_vec());
    }
    if INT_FIELDS.contains(&field) || INT_IN_EVENT.contains(&(event, field)) {
        Ty::Int
    } else {
        Ty::Text
    }
}

/// One field of a message spec.
#[derive(Debug, Clone)]
pub struct FieldDef {
    /// The header as printed on the wire.
    pub wire: String,
    /// Its type.
    pub ty: Ty,
    /// May repeat.
    pub repeatable: bool,
}

/// Where a snapshot's fields sit in an event.
#[derive(Debug, Clone)]
pub struct SnapshotUse {
    /// `ChannelSnapshot` or `BridgeSnapshot`.
    pub struct_name: &'static str,
    /// The name of the key table for this prefix.
    pub keys: String,
    /// The prefix (`Dest`, ...), empty for the event's own channel or bridge.
    pub prefix: String,
}

/// A typed accessor of an event or response.
#[derive(Debug, Clone)]
pub enum Accessor {
    /// A plain field: the method name and the field.
    Field(String, FieldDef),
    /// A snapshot view: the method name and what it reads.
    Snapshot(String, SnapshotUse),
}

/// A typed event or response.
#[derive(Debug, Clone)]
pub struct MessageDef {
    /// The wire name.
    pub name: String,
    /// The Rust type name.
    pub type_name: String,
    /// Read classes.
    pub class: Vec<String>,
    /// `Documented`, `Undocumented` or `Response`.
    pub source: &'static str,
    /// UserEvent.
    pub arbitrary: bool,
    /// A line of docs: module, since, list role.
    pub about: String,
    /// Every field, snapshots expanded.
    pub spec: Vec<FieldDef>,
    /// The methods.
    pub accessors: Vec<Accessor>,
}

/// A snapshot struct.
#[derive(Debug, Clone)]
pub struct SnapshotDef {
    /// `ChannelSnapshot` / `BridgeSnapshot`.
    pub struct_name: &'static str,
    /// `channel` / `bridge`.
    pub kind: &'static str,
    /// Fields without prefix: method name, field, documented.
    pub fields: Vec<(String, FieldDef, bool)>,
    /// Every prefix used, with its key table name.
    pub prefixes: Vec<(String, String)>,
}

/// A generated enum.
#[derive(Debug, Clone)]
pub struct EnumDef {
    /// Type name.
    pub name: String,
    /// (variant, wire value).
    pub variants: Vec<(String, String)>,
    /// Who uses it (for the docs).
    pub used_by: Vec<String>,
}

/// How a builder method takes its value.
#[derive(Debug, Clone)]
pub enum ParamTy {
    /// Anything `Display`.
    Display,
    /// A bool, written with these spellings.
    Bool(String, String),
    /// A generated enum.
    Enum(String),
    /// An event mask (`ami_types::actions::EventMask`): `on`, `off` or a class list.
    EventMask,
    /// One of a set of parts the action acts on, selected by `yes` (see [`SELECTORS`]): a
    /// method without argument; the set's parameters (itself among them), for the docs.
    Select(Vec<String>),
}

/// One action parameter.
#[derive(Debug, Clone)]
pub struct ParamDef {
    /// Header name (index-0 form for indexed ones).
    pub wire: String,
    /// `Action-%06d` style header for indexed parameters.
    pub name_format: Option<String>,
    /// Method name.
    pub method: String,
    /// Value type.
    pub ty: ParamTy,
    /// Constructor argument.
    pub required: bool,
    /// One header per call.
    pub repeatable: bool,
    /// The server's default.
    pub default: Option<String>,
}

/// One action.
#[derive(Debug, Clone)]
pub struct ActionDef {
    /// The `Action:` name (also the type name).
    pub name: String,
    /// Write classes.
    pub privilege: Vec<String>,
    /// Parameters except ActionID.
    pub params: Vec<ParamDef>,
    /// `single`, `list` or `single_or_list`.
    pub response: String,
    /// Typed response view type, or `Ack`.
    pub response_view: String,
    /// (item type, complete type) for lists, as Rust paths.
    pub list: Option<(String, String)>,
    /// Item event names, for the docs.
    pub list_items: Vec<String>,
    /// Follow-up event and its condition.
    pub follow_up: Option<(String, Option<String>)>,
    /// Takes headers of the caller's choosing (`UserEvent`): a `header(key, value)` method.
    pub arbitrary_headers: bool,
}

/// Everything to emit.
#[derive(Debug, Clone)]
pub struct Model {
    /// Catalog version.
    pub version: String,
    /// The event class names, in Asterisk's `perms[]` order (`all` and `none` not included).
    pub classes: Vec<String>,
    /// Events sorted by lower-case name.
    pub events: Vec<MessageDef>,
    /// Snapshot structs.
    pub snapshots: Vec<SnapshotDef>,
    /// Enums by name.
    pub enums: Vec<EnumDef>,
    /// Actions in catalog order.
    pub actions: Vec<ActionDef>,
    /// Typed responses.
    pub responses: Vec<MessageDef>,
}

/// Response fields the catalog does not list: from `main/manager.c` and the captures.
type ResponseFields = &'static [(&'static str, &'static str)];
const RESPONSES: &[(&str, ResponseFields)] = &[
    ("Challenge", &[("Challenge", "text")]),
    ("Command", &[("Output", "list")]),
    (
        "CoreSettings",
        &[
            ("AMIversion", "text"),
            ("AsteriskVersion", "text"),
            ("SystemName", "text"),
            ("CoreMaxCalls", "int"),
            ("CoreMaxLoadAvg", "text"),
            ("CoreRunUser", "text"),
            ("CoreRunGroup", "text"),
            ("CoreMaxFilehandles", "int"),
            ("CoreRealTimeEnabled", "yesno"),
            ("CoreCDRenabled", "yesno"),
            ("CoreHTTPenabled", "yesno"),
            ("SoundsSearchCustomDir", "yesno"),
        ],
    ),
    (
        "CoreStatus",
        &[
            ("CoreStartupDate", "text"),
            ("CoreStartupTime", "text"),
            ("CoreReloadDate", "text"),
            ("CoreReloadTime", "text"),
            ("CoreCurrentCalls", "int"),
            ("CoreProcessedCalls", "int"),
        ],
    ),
    ("Events", &[("Events", "text")]),
    (
        "ExtensionState",
        &[
            ("Exten", "text"),
            ("Context", "text"),
            ("Hint", "text"),
            ("Status", "int"),
            ("StatusText", "text"),
        ],
    ),
    ("Getvar", &[("Variable", "text"), ("Value", "text")]),
    (
        "MailboxCount",
        &[
            ("Mailbox", "text"),
            ("UrgMessages", "int"),
            ("NewMessages", "int"),
            ("OldMessages", "int"),
        ],
    ),
    ("MailboxStatus", &[("Mailbox", "text"), ("Waiting", "int")]),
    ("Ping", &[("Ping", "text"), ("Timestamp", "text")]),
];

/// Parameters that take an event mask: `on`, `off` or a class list such as `call,agent`
/// (`strings_to_mask` in `main/manager.c`). The catalog has the list only as a placeholder,
/// which would leave `on` and `off`, a boolean.
const EVENT_MASK_PARAMS: &[(&str, &str)] = &[("Events", "EventMask"), ("Login", "Events")];

/// Placeholder parameters standing for headers of the caller's choosing
/// (`action_userevent` in `main/manager.c` copies every header but `Action` and
/// `UserEvent` into the event): replaced by one `header(key, value)` method.
const ARBITRARY_HEADERS: &[(&str, &[&str])] = &[("UserEvent", &["Header1", "HeaderN"])];

/// Yes/no parameters that select the parts an action acts on, where selecting none selects
/// every part: a `no` is never read as "leave this part out". `apps/app_queue.c`
/// `manager_queue_reload` sets a part's flag only for `yes` and, with no flag set, reloads
/// everything: `Members: no` alone reloads the members too. A `bool` setter would let
/// `members(false)` read as "not the members"; a method without argument sends `yes`, and
/// the way to leave a part out is to select the others.
const SELECTORS: &[(&str, &[&str])] = &[("QueueReload", &["Members", "Rules", "Parameters"])];

/// Actions the catalog calls single that Asterisk answers as another action: (action, as).
/// `pjsip_action_hangup` (channels/pjsip/dialplan_functions.c) is
/// `ast_manager_hangup_helper`, Hangup's own code: with `Channel: /regex/`, a list of
/// `ChannelHungup` closed by `ChannelsHungupListComplete`.
const ANSWERED_AS: &[(&str, &str)] = &[("PJSIPHangup", "Hangup")];

/// Parameters Asterisk reads that the catalog leaves out: (action, header), optional, text.
const MORE_PARAMS: &[(&str, &str)] = &[
    // `apps/app_queue.c` `manager_add_queue_member`.
    ("QueueAdd", "Wrapuptime"),
    // `apps/app_mixmonitor.c` `manager_mute_mixmonitor`: mutes that recording only
    // (without it, every MixMonitor on the channel).
    ("MixMonitorMute", "MixMonitorID"),
    // `main/manager.c` `action_listcategories`: lists only the categories matching it.
    ("ListCategories", "Match"),
];

/// Parameters the catalog calls optional that Asterisk refuses the action without.
const REQUIRED_PARAMS: &[(&str, &str)] = &[
    // `main/manager.c` `action_blind_transfer`: "No extension specified".
    ("BlindTransfer", "Exten"),
    // `apps/app_mixmonitor.c` `manager_mute_mixmonitor`: "No direction specified. Must be
    // read, write or both", "No state specified".
    ("MixMonitorMute", "Direction"),
    ("MixMonitorMute", "State"),
    // `main/manager.c` `action_coreshowchannelmap`: "CoreShowChannelMap requires a
    // channel."
    ("CoreShowChannelMap", "Channel"),
    // `main/manager.c` `action_filter`: anything but `Add` is "Unknown operation".
    ("Filter", "Operation"),
];

/// Parameters whose header Asterisk reads under another name than its docs (and so the
/// catalog) give: (action, catalog name, header Asterisk reads).
const RENAMED_PARAMS: &[(&str, &str, &str)] = &[
    // `res/res_xmpp.c` `manager_jabber_send` reads `ScreenName` ("No ScreenName
    // specified"); the docs call it `JID`, which nothing reads.
    ("JabberSend", "JID", "ScreenName"),
];

/// Method names the shared macros already define.
const TAKEN: &[&str] = &[
    "message",
    "spec",
    "issues",
    "from_message",
    "action_id",
    "params",
    "with",
    "new",
];

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    arr(v, key).iter().filter_map(s).collect()
}

fn name_of(v: &Value) -> Result<String, Error> {
    s(&v["name"]).ok_or_else(|| Error::Catalog(format!("entry without a name: {v}")))
}

/// Picks a method name that is not taken yet.
fn unique(base: String, used: &mut BTreeSet<String>) -> String {
    let mut name = base.clone();
    if TAKEN.contains(&name.as_str()) {
        name = format!("{base}_field");
    }
    let mut n = 2;
    while used.contains(&name) {
        name = format!("{base}_{n}");
        n += 1;
    }
    used.insert(name.clone());
    name
}

/// Type names an enum must not shadow.
const PRELUDE: &[&str] = &[
    "Action", "Box", "Event", "Message", "Option", "Result", "String", "Vec",
];

/// Enum names: one per distinct (base name, value set); a base name used with several value
/// sets gets its first owner as a prefix on each.
/// (value set, values in catalog order, owners).
type EnumUse = (BTreeSet<String>, Vec<String>, Vec<String>);

#[derive(Default)]
struct Enums {
    seen: BTreeMap<String, Vec<EnumUse>>,
}

impl Enums {
    fn note(&mut self, base: &str, values: &[String], owner: &str) {
        let set: BTreeSet<String> = values.iter().cloned().collect();
        let entry = self.seen.entry(base.to_string()).or_default();
        match entry.iter_mut().find(|(s, _, _)| *s == set) {
            Some((_, _, owners)) => owners.push(owner.to_string()),
            None => entry.push((set, values.to_vec(), vec![owner.to_string()])),
        }
    }

    fn name(&self, base: &str, values: &[String]) -> String {
        let set: BTreeSet<String> = values.iter().cloned().collect();
        let Some(list) = self.seen.get(base) else {
            return base.to_string();
        };
        if list.len() == 1 && !PRELUDE.contains(&base) {
            return base.to_string();
        }
        match list.iter().find(|(s, _, _)| *s == set) {
            Some((_, _, owners)) => format!("{}{base}", type_name(&owners[0])),
            None => base.to_string(),
        }
    }

    fn defs(&self) -> Result<Vec<EnumDef>, Error> {
        let mut out = Vec::new();
        for (base, list) in &self.seen {
            for (_, values, owners) in list {
                let name = self.name(base, values);
                let mut variants: Vec<(String, String)> = Vec::new();
                for v in values {
                    let variant = pascal(v);
                    if variant == "Other" || variants.iter().any(|(x, _)| *x == variant) {
                        return Err(Error::Catalog(format!(
                            "enum {name}: variant {variant} twice"
                        )));
                    }
                    variants.push((variant, v.clone()));
                }
                let mut used_by = owners.clone();
                used_by.dedup();
                out.push(EnumDef {
                    name,
                    variants,
                    used_by,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        for pair in out.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(Error::Catalog(format!("two enums named {}", pair[0].name)));
            }
        }
        Ok(out)
    }
}

/// A snapshot field: accessor names chosen so that `h.channel().name()` reads well.
fn snapshot_method(kind: &str, field: &str) -> String {
    match (kind, field) {
        ("channel", "Channel") => "name".into(),
        ("channel", "ChannelState") => "state".into(),
        ("channel", "ChannelStateDesc") => "state_desc".into(),
        ("channel", "ChanVariable") => "chan_variables".into(),
        ("bridge", f) => match f.strip_prefix("Bridge") {
            Some("Type") => "bridge_type".into(),
            Some(rest) if !rest.is_empty() => snake(rest),
            _ => snake(f),
        },
        _ => snake(field),
    }
}

fn keys_const(kind: &str, prefix: &str) -> String {
    let p = snake(prefix).trim_end_matches('_').to_ascii_uppercase();
    if p.is_empty() {
        format!("{}_KEYS", kind.to_ascii_uppercase())
    } else {
        format!("{}_KEYS_{p}", kind.to_ascii_uppercase())
    }
}

fn snapshot_accessor(kind: &str, prefix: &str) -> String {
    match (kind, prefix) {
        (k, "") => k.to_string(),
        ("channel", p) => snake(p),
        (_, p) => format!("{}_bridge", snake(p)),
    }
}

/// (name, enum values, repeatable, wire name)
type RawField = (String, Option<Vec<String>>, bool, Option<String>);

struct RawEvent {
    name: String,
    class: Vec<String>,
    documented: bool,
    arbitrary: bool,
    about: String,
    fields: Vec<RawField>,
    snapshots: Vec<(String, String)>,
}

impl Model {
    /// Builds the model from the catalog JSON.
    pub fn build(json: &Value) -> Result<Model, Error> {
        let version = s(&json["asterisk_version"]).unwrap_or_default();
        let raw_events = raw_events(json)?;
        let snap_fields = |kind: &str| -> Vec<(String, Option<Vec<String>>, bool, bool)> {
            arr(&json["snapshots"], kind)
                .iter()
                .filter_map(|f| {
                    let name = s(&f["name"])?;
                    let values = enum_values(&format!("{kind} snapshot"), &name, f);
                    let rep = f["repeatable"].as_bool().unwrap_or(false);
                    let doc = f["documented"].as_bool().unwrap_or(false);
                    Some((name, values, rep, doc))
                })
                .collect()
        };
        let kinds = [("channel", "ChannelSnapshot"), ("bridge", "BridgeSnapshot")];

        // Pass 1: every enum, with its owners.
        let mut enums = Enums::default();
        for (kind, _) in kinds {
            for (name, values, _, _) in snap_fields(kind) {
                if let Ty::Enum(base, values) = infer("", &name, values.as_deref()) {
                    enums.note(&base, &values, &format!("{kind} snapshot"));
                }
            }
        }
        for ev in &raw_events {
            let snap_names = snapshot_names(ev, &snap_fields);
            for (name, values, _, _) in &ev.fields {
                if snap_names.contains_key(name) {
                    continue;
                }
                if let Ty::Enum(base, values) = infer(&ev.name, name, values.as_deref()) {
                    enums.note(&base, &values, &ev.name);
                }
            }
        }
        let actions_json = arr(json, "actions");
        for a in actions_json {
            let aname = name_of(a)?;
            for p in arr(a, "params") {
                if let Some((base, values)) = param_enum(p) {
                    if let Ty::Enum(base, values) = infer(&aname, &base, Some(&values)) {
                        enums.note(&base, &values, &aname);
                    }
                }
            }
        }
        let enum_defs = enums.defs()?;
        let ty_of =
            |event: &str, field: &str, values: Option<&[String]>| match infer(event, field, values)
            {
                Ty::Enum(base, values) => Ty::Enum(enums.name(&base, &values), values),
                t => t,
            };

        // Snapshots.
        let mut snapshots = Vec::new();
        for (kind, struct_name) in kinds {
            let fields = snap_fields(kind)
                .into_iter()
                .map(|(name, values, rep, doc)| {
                    let ty = ty_of("", &name, values.as_deref());
                    let method = snapshot_method(kind, &name);
                    (
                        method,
                        FieldDef {
                            wire: name,
                            ty,
                            repeatable: rep,
                        },
                        doc,
                    )
                })
                .collect();
            let mut prefixes: Vec<(String, String)> = Vec::new();
            for ev in &raw_events {
                for (k, p) in &ev.snapshots {
                    if k == kind && !prefixes.iter().any(|(x, _)| x == p) {
                        prefixes.push((p.clone(), keys_const(kind, p)));
                    }
                }
            }
            prefixes.sort();
            snapshots.push(SnapshotDef {
                struct_name,
                kind,
                fields,
                prefixes,
            });
        }

        // Events.
        let mut events = Vec::new();
        for ev in &raw_events {
            let types_from = TYPES_FROM
                .iter()
                .find(|(u, _)| *u == ev.name)
                .and_then(|(_, d)| raw_events.iter().find(|e| e.name == *d));
            let snap_names = snapshot_names(ev, &snap_fields);
            let mut spec = Vec::new();
            let mut accessors = Vec::new();
            let mut used = BTreeSet::new();
            let mut done_snap = BTreeSet::new();
            for (name, values, rep, wire) in &ev.fields {
                if let Some((kind, prefix)) = snap_names.get(name) {
                    if done_snap.insert((kind.clone(), prefix.clone())) {
                        let snap = snapshots
                            .iter()
                            .find(|s| s.kind == kind)
                            .ok_or_else(|| Error::Catalog(format!("no {kind} snapshot")))?;
                        for (_, f, _) in &snap.fields {
                            spec.push(FieldDef {
                                wire: format!("{prefix}{}", f.wire),
                                ty: f.ty.clone(),
                                repeatable: f.repeatable,
                            });
                        }
                        let method = snapshot_accessor(kind, prefix);
                        if !used.insert(method.clone()) {
                            return Err(Error::Catalog(format!(
                                "{}: accessor {method} twice",
                                ev.name
                            )));
                        }
                        accessors.push(Accessor::Snapshot(
                            method,
                            SnapshotUse {
                                struct_name: snap.struct_name,
                                keys: keys_const(kind, prefix),
                                prefix: prefix.clone(),
                            },
                        ));
                    }
                    continue;
                }
                let mut ty = ty_of(&ev.name, name, values.as_deref());
                if let Some(src) = types_from {
                    if let Some((_, v, _, _)) = src.fields.iter().find(|f| f.0 == *name) {
                        ty = ty_of(&src.name, name, v.as_deref());
                    }
                }
                let wire_name = wire.clone().unwrap_or_else(|| name.clone());
                if spec
                    .iter()
                    .any(|f: &FieldDef| f.wire.eq_ignore_ascii_case(&wire_name))
                {
                    continue;
                }
                let field = FieldDef {
                    wire: wire_name,
                    ty,
                    repeatable: *rep,
                };
                spec.push(field.clone());
                let method = unique(snake(name), &mut used);
                accessors.push(Accessor::Field(method, field));
            }
            events.push(MessageDef {
                name: ev.name.clone(),
                type_name: type_name(&ev.name),
                class: ev.class.clone(),
                source: if ev.documented {
                    "Documented"
                } else {
                    "Undocumented"
                },
                arbitrary: ev.arbitrary,
                about: ev.about.clone(),
                spec,
                accessors,
            });
        }
        events.sort_by(|a, b| {
            a.name
                .to_ascii_lowercase()
                .cmp(&b.name.to_ascii_lowercase())
                .then(a.name.cmp(&b.name))
        });
        for pair in events.windows(2) {
            if pair[0].name.eq_ignore_ascii_case(&pair[1].name) {
                return Err(Error::Catalog(format!("two events named {}", pair[0].name)));
            }
        }

        // Responses.
        let mut responses = Vec::new();
        for (action, fields) in RESPONSES {
            let mut spec = vec![FieldDef {
                wire: "Message".into(),
                ty: Ty::Text,
                repeatable: false,
            }];
            let mut accessors = vec![Accessor::Field("text".into(), spec[0].clone())];
            let mut used = BTreeSet::from(["text".to_string()]);
            for (name, kind) in *fields {
                let (ty, repeatable) = match *kind {
                    "int" => (Ty::Int, false),
                    "yesno" => (Ty::Bool("Yes".into(), "No".into()), false),
                    "list" => (Ty::Text, true),
                    _ => (Ty::Text, false),
                };
                let field = FieldDef {
                    wire: name.to_string(),
                    ty,
                    repeatable,
                };
                spec.push(field.clone());
                accessors.push(Accessor::Field(unique(snake(name), &mut used), field));
            }
            responses.push(MessageDef {
                name: action.to_string(),
                type_name: format!("{action}Response"),
                class: Vec::new(),
                source: "Response",
                arbitrary: false,
                about: format!("The response to `{action}`."),
                spec,
                accessors,
            });
        }

        // Actions.
        let event_type = |name: &str| -> Option<String> {
            events
                .iter()
                .find(|e| e.name.eq_ignore_ascii_case(name))
                .map(|e| format!("events::{}<'a>", e.type_name))
        };
        let mut actions = Vec::new();
        for a in actions_json {
            let name = name_of(a)?;
            let mut used = BTreeSet::new();
            let mut params = Vec::new();
            let placeholders = ARBITRARY_HEADERS
                .iter()
                .find(|(action, _)| *action == name)
                .map_or(&[][..], |(_, p)| *p);
            let mut dropped = 0;
            for p in arr(a, "params") {
                let documented = name_of(p)?;
                let wire = RENAMED_PARAMS
                    .iter()
                    .find(|(action, from, _)| *action == name && *from == documented)
                    .map_or(documented, |(_, _, to)| to.to_string());
                if placeholders.contains(&wire.as_str()) {
                    dropped += 1;
                    continue;
                }
                if wire == "ActionID" {
                    continue;
                }
                let name_format = s(&p["name_format"]);
                let base = match &name_format {
                    Some(_) => wire.split(['-', '(']).next().unwrap_or(&wire).to_string(),
                    None => wire.clone(),
                };
                let selectors = SELECTORS
                    .iter()
                    .find(|(action, parts)| *action == name && parts.contains(&wire.as_str()));
                let ty = match param_enum(p) {
                    _ if EVENT_MASK_PARAMS.contains(&(&name, &wire)) => ParamTy::EventMask,
                    // Only a yes/no parameter becomes a selector (`check_action_fixes`
                    // refuses the table otherwise: the handler has likely changed too).
                    Some((b, values))
                        if selectors.is_some()
                            && matches!(ty_of(&name, &b, Some(&values)), Ty::Bool(..)) =>
                    {
                        let parts = selectors.map_or(&[][..], |(_, parts)| *parts);
                        ParamTy::Select(parts.iter().map(|p| p.to_string()).collect())
                    }
                    Some((b, values)) => match ty_of(&name, &b, Some(&values)) {
                        Ty::Bool(y, n) => ParamTy::Bool(y, n),
                        Ty::Enum(e, _) => ParamTy::Enum(e),
                        _ => ParamTy::Display,
                    },
                    None => ParamTy::Display,
                };
                let required = p["required"].as_bool().unwrap_or(false);
                if required && REQUIRED_PARAMS.contains(&(&name, &wire)) {
                    return Err(Error::Catalog(format!(
                        "{name} requires {wire} now: drop it from REQUIRED_PARAMS"
                    )));
                }
                params.push(ParamDef {
                    method: unique(snake(&base), &mut used),
                    required: required || REQUIRED_PARAMS.contains(&(&name, &wire)),
                    wire,
                    name_format,
                    ty,
                    repeatable: p["repeatable"].as_bool().unwrap_or(false),
                    default: s(&p["default"]),
                });
            }
            if dropped != placeholders.len() {
                return Err(Error::Catalog(format!(
                    "ARBITRARY_HEADERS: {name} lacks one of {placeholders:?}"
                )));
            }
            for (_, wire) in MORE_PARAMS.iter().filter(|(action, _)| *action == name) {
                if params.iter().any(|p| p.wire == *wire) {
                    return Err(Error::Catalog(format!(
                        "{name} has {wire} now: drop it from MORE_PARAMS"
                    )));
                }
                params.push(ParamDef {
                    method: unique(snake(wire), &mut used),
                    wire: wire.to_string(),
                    name_format: None,
                    ty: ParamTy::Display,
                    required: false,
                    repeatable: false,
                    default: None,
                });
            }
            let response = s(&a["response"]).unwrap_or_else(|| "single".into());
            let list_items = strings(a, "list_item_events");
            let list = if response == "single" {
                None
            } else {
                let item = match list_items.as_slice() {
                    [one] => event_type(one),
                    _ => None,
                }
                .unwrap_or_else(|| "Event<'a>".into());
                let complete = s(&a["list_complete_event"])
                    .and_then(|c| event_type(&c))
                    .unwrap_or_else(|| "Event<'a>".into());
                Some((item, complete))
            };
            let response_view = if RESPONSES.iter().any(|(r, _)| *r == name) {
                format!("{name}Response")
            } else {
                "Ack".into()
            };
            actions.push(ActionDef {
                privilege: strings(a, "privilege_class"),
                params,
                response,
                response_view,
                list,
                list_items,
                follow_up: s(&a["follow_up_event"]).map(|e| (e, s(&a["follow_up_when"]))),
                arbitrary_headers: ARBITRARY_HEADERS.iter().any(|(action, _)| *action == name),
                name,
            });
        }
        for (action, like) in ANSWERED_AS {
            let answer = actions
                .iter()
                .find(|a| a.name == *like)
                .map(|a| (a.response.clone(), a.list.clone(), a.list_items.clone()));
            let (Some((response, list, list_items)), Some(a)) =
                (answer, actions.iter_mut().find(|a| a.name == *action))
            else {
                return Err(Error::Catalog(format!(
                    "ANSWERED_AS: no action {action} or {like}"
                )));
            };
            if a.response != "single" {
                return Err(Error::Catalog(format!(
                    "{action} is answered by a list now: drop it from ANSWERED_AS"
                )));
            }
            (a.response, a.list, a.list_items) = (response, list, list_items);
        }
        check_action_fixes(&actions)?;

        Ok(Model {
            version,
            classes: strings(json, "privilege_classes"),
            events,
            snapshots,
            enums: enum_defs,
            actions,
            responses,
        })
    }
}

/// Fails when a hand-written action fix names an action or parameter the catalog does not
/// have (a fix that silently stopped applying would be a regression nobody sees).
fn check_action_fixes(actions: &[ActionDef]) -> Result<(), Error> {
    let find = |action: &str, wire: &str| {
        actions
            .iter()
            .find(|a| a.name == action)
            .and_then(|a| a.params.iter().find(|p| p.wire == wire))
    };
    let stale = |table: &str, action: &str, wire: &str| {
        Err(Error::Catalog(format!(
            "{table}: {action} has no parameter {wire}"
        )))
    };
    for (action, wire) in EVENT_MASK_PARAMS.iter().chain(REQUIRED_PARAMS) {
        if find(action, wire).is_none() {
            return stale("EVENT_MASK_PARAMS / REQUIRED_PARAMS", action, wire);
        }
    }
    for (action, from, to) in RENAMED_PARAMS {
        if find(action, to).is_none() {
            return stale("RENAMED_PARAMS", action, from);
        }
    }
    for (action, parts) in SELECTORS {
        for wire in *parts {
            match find(action, wire) {
                Some(p) if p.required => {
                    // A part the action cannot go without selects nothing.
                    return Err(Error::Catalog(format!(
                        "SELECTORS: {action} requires {wire} now"
                    )));
                }
                Some(p) if matches!(p.ty, ParamTy::Select(_)) => {}
                Some(_) => {
                    return Err(Error::Catalog(format!(
                        "SELECTORS: {action}'s {wire} is not yes/no in the catalog"
                    )));
                }
                None => return stale("SELECTORS", action, wire),
            }
        }
    }
    let more = MORE_PARAMS.iter().map(|(action, _)| *action);
    for action in ARBITRARY_HEADERS
        .iter()
        .map(|(action, _)| *action)
        .chain(more)
    {
        if !actions.iter().any(|a| a.name == action) {
            return Err(Error::Catalog(format!(
                "ARBITRARY_HEADERS / MORE_PARAMS: no action {action}"
            )));
        }
    }
    Ok(())
}

/// An action parameter's enum: its base name and its literal values (placeholders removed).
fn param_enum(p: &Value) -> Option<(String, Vec<String>)> {
    if !p["sub_enum"].is_null() {
        // `Options-000000`: its values depend on another parameter; the catalog's list
        // is the other parameter's. Take text.
        return None;
    }
    let placeholders = strings(p, "enum_placeholders");
    let values: Vec<String> = strings(p, "enum")
        .into_iter()
        .filter(|v| !placeholders.contains(v))
        .collect();
    if values.is_empty() {
        return None;
    }
    let wire = s(&p["name"])?;
    let base = wire.split(['-', '(']).next().unwrap_or(&wire).to_string();
    Some((base, values))
}

type SnapFields = Vec<(String, Option<Vec<String>>, bool, bool)>;

/// Which of an event's fields come from which snapshot: field name -> (kind, prefix).
fn snapshot_names(
    ev: &RawEvent,
    snap_fields: &dyn Fn(&str) -> SnapFields,
) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for (kind, prefix) in &ev.snapshots {
        for (name, _, _, _) in snap_fields(kind) {
            out.insert(format!("{prefix}{name}"), (kind.clone(), prefix.clone()));
        }
    }
    out
}

fn raw_events(json: &Value) -> Result<Vec<RawEvent>, Error> {
    let mut out = Vec::new();
    for e in arr(json, "events") {
        let name = name_of(e)?;
        let mut fields: Vec<RawField> = Vec::new();
        for f in arr(e, "fields") {
            let fname = name_of(f)?;
            if ENVELOPE.contains(&fname.as_str()) {
                continue;
            }
            let values = enum_values(&name, &fname, f);
            fields.push((
                fname,
                values,
                f["repeatable"].as_bool().unwrap_or(false),
                s(&f["wire_name"]),
            ));
        }
        for f in arr(e, "undocumented_fields") {
            let fname = name_of(f)?;
            if ENVELOPE.contains(&fname.as_str()) || fields.iter().any(|x| x.0 == fname) {
                continue;
            }
            fields.push((
                fname,
                None,
                f["repeatable"].as_bool().unwrap_or(false),
                None,
            ));
        }
        for (event, field, repeatable) in MORE_FIELDS {
            if *event != name {
                continue;
            }
            if fields.iter().any(|x| x.0 == *field) {
                return Err(Error::Catalog(format!(
                    "{name} has {field} now: drop it from MORE_FIELDS"
                )));
            }
            fields.push((field.to_string(), None, *repeatable, None));
        }
        let snapshots = arr(e, "snapshots")
            .iter()
            .filter_map(|sn| Some((s(&sn["kind"])?, s(&sn["prefix"])?)))
            .collect();
        let since = strings(e, "since").join(", ");
        let module = s(&e["module"]).unwrap_or_default();
        out.push(RawEvent {
            class: strings(e, "class"),
            documented: true,
            arbitrary: e["arbitrary_fields"].as_bool().unwrap_or(false),
            about: format!("Documented by `{module}`, since {since}."),
            fields,
            snapshots,
            name,
        });
    }
    for e in arr(json, "undocumented_events") {
        let name = name_of(e)?;
        let Some(list) = e["fields_from_source"].as_array() else {
            continue; // fields unknown: such an event stays `Event::Unknown`
        };
        let fields = list
            .iter()
            .filter_map(s)
            .filter(|f| !ENVELOPE.contains(&f.as_str()))
            .map(|f| (f, None, false, None))
            .collect();
        let files = strings(e, "files").join(", ");
        let mut about = format!("Not in the Asterisk docs; fields from the C source ({files}).");
        let items = strings(e, "list_item_of");
        if !items.is_empty() {
            about += &format!(" List item of `{}`.", items.join("`, `"));
        }
        let completes = strings(e, "list_complete_of");
        if !completes.is_empty() {
            about += &format!(" Ends the list of `{}`.", completes.join("`, `"));
        }
        out.push(RawEvent {
            class: strings(e, "class"),
            documented: false,
            arbitrary: false,
            about,
            fields,
            snapshots: Vec::new(),
            name,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn model() -> Model {
        let text = std::fs::read_to_string(crate::catalog_path()).expect("the catalog");
        Model::build(&serde_json::from_str(&text).unwrap()).unwrap()
    }

    fn field<'m>(model: &'m Model, owner: &str, wire: &str) -> Option<&'m FieldDef> {
        if let Some(kind) = owner.strip_suffix(" snapshot") {
            let snap = model.snapshots.iter().find(|s| s.kind == kind)?;
            return snap
                .fields
                .iter()
                .map(|(_, f, _)| f)
                .find(|f| f.wire == wire);
        }
        let event = model.events.iter().find(|e| e.name == owner)?;
        event.spec.iter().find(|f| f.wire == wire)
    }

    /// A fix whose owner or field the catalog lost would stop applying without a word.
    #[test]
    fn every_hand_written_field_fix_applies_to_the_catalog() {
        let model = model();
        for (owner, wire, more) in MORE_VALUES {
            match field(&model, owner, wire).map(|f| &f.ty) {
                Some(Ty::Enum(_, values)) => {
                    for v in *more {
                        assert!(values.iter().any(|x| x == v), "{owner} {wire} {v}");
                    }
                }
                other => panic!("MORE_VALUES: {owner} {wire} is {other:?}"),
            }
        }
        for (event, wire) in INT_IN_EVENT {
            let ty = field(&model, event, wire).map(|f| &f.ty);
            assert_eq!(ty, Some(&Ty::Int), "INT_IN_EVENT: {event} {wire}");
        }
        for (event, wire, _) in MORE_FIELDS {
            assert!(
                field(&model, event, wire).is_some(),
                "MORE_FIELDS: {event} {wire}"
            );
        }
    }

    #[test]
    fn cause_is_an_integer_only_where_asterisk_prints_a_number() {
        let model = model();
        let cause = |event| field(&model, event, "Cause").map(|f| f.ty.clone());
        for event in ["Hangup", "HangupRequest", "SoftHangupRequest"] {
            assert_eq!(cause(event), Some(Ty::Int), "{event}");
        }
        for event in ["PeerStatus", "Registry"] {
            assert_eq!(cause(event), Some(Ty::Text), "{event}");
        }
    }
}
