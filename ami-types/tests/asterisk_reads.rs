//! Typed actions write what Asterisk 22's C handlers read, where its docs (and so the
//! catalog the builders are generated from) say otherwise: a header name the handler never
//! reads, a parameter the docs call optional that the handler refuses the action without,
//! one the handler reads that the docs leave out, an action answered twice. Each test names
//! the handler it follows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_proto::Action;
use ami_types::actions::{
    CoreShowChannelMap, Filter, JabberSend, ListCategories, MixMonitorMute, QueueReload,
};
use ami_types::enums::FilterOperation;

fn fields(a: &Action) -> Vec<(String, String)> {
    a.fields()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// res/res_xmpp.c `manager_jabber_send` reads the recipient from `ScreenName` and answers
/// "No ScreenName specified" without it; the docs call it `JID`, which nothing reads.
#[test]
fn jabber_send_names_the_recipient_screen_name_as_asterisk_reads_it() {
    let action: Action = JabberSend::new("asterisk", "bob@example.com", "hello").into();
    assert_eq!(
        action.get("ScreenName"),
        Some("bob@example.com"),
        "sent {:?}",
        fields(&action)
    );
    assert_eq!(action.get("JID"), None, "Asterisk does not read JID");
}

/// apps/app_mixmonitor.c `manager_mute_mixmonitor`: no `Direction` is "No direction
/// specified. Must be read, write or both", no `State` "No state specified"; `MixMonitorID`
/// mutes that recording only (without it, every MixMonitor on the channel).
#[test]
fn mix_monitor_mute_writes_direction_and_state_and_may_name_one_recording() {
    let action: Action = MixMonitorMute::new("PJSIP/100-0001", "both", "1")
        .mix_monitor_id("rec-7")
        .into();
    assert_eq!(
        fields(&action)
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["Channel", "Direction", "State", "MixMonitorID"]
    );
}

/// main/manager.c `action_coreshowchannelmap`: no `Channel` is "CoreShowChannelMap requires
/// a channel." (an Error, no list).
#[test]
fn core_show_channel_map_writes_its_channel() {
    let action: Action = CoreShowChannelMap::new("PJSIP/100-0001").into();
    assert_eq!(action.get("Channel"), Some("PJSIP/100-0001"));
}

/// main/manager.c `action_filter`: anything but `Operation: Add` (an absent one included)
/// is "Unknown operation", and the filter is never added.
#[test]
fn filter_always_writes_its_operation() {
    let action: Action = Filter::new(FilterOperation::Add)
        .filter("Event: Hangup")
        .into();
    assert_eq!(action.get("Operation"), Some("Add"));
}

/// main/manager.c `action_listcategories` reads `Match` and lists only the matching
/// categories (`ast_category_browse_filtered(cfg, NULL, category, match)`).
#[test]
fn list_categories_may_match_categories() {
    let action: Action = ListCategories::new("pjsip.conf")
        .match_("type=endpoint")
        .into();
    assert_eq!(action.get("Match"), Some("type=endpoint"));
}

/// res/res_xmpp.c `manager_jabber_send` answers twice: `astman_send_ack(s, m, "Attempting
/// to send Jabber Message")`, then the result as a second response with the same ActionID
/// ("Could not find Sender", or a bare `Response: Success` / `Error`). The first is no
/// result: a message that was never sent must not read `Ok`.
#[test]
fn jabber_send_reports_the_send_result_not_the_attempt() {
    let action: Action = JabberSend::new("asterisk", "bob@example.com", "hello").into();
    let outcome = support::outcome(
        action,
        |id| {
            format!(
                "Response: Success\r\nActionID: {id}\r\nMessage: Attempting to send Jabber Message\r\n\r\n\
                 Response: Error\r\nActionID: {id}\r\nMessage: Could not find Sender\r\n\r\n"
            )
        },
        support::Then::Stays,
    );
    assert!(
        outcome.is_err(),
        "Asterisk said the message could not be sent, the client says {outcome:?}"
    );
}

/// apps/app_queue.c `manager_queue_reload` sets a part's flag only when its header is `yes`
/// and, with no flag set, reloads every part: `Members: no` alone reloads the members too.
/// The builder selects parts (each method sends `yes`) and can write no `no`, so no request
/// reads as leaving a part out while Asterisk reloads it.
#[test]
fn queue_reload_selects_the_parts_it_reloads_and_never_writes_a_no() {
    let action: Action = QueueReload::new()
        .queue("support")
        .rules()
        .parameters()
        .into();
    assert_eq!(
        fields(&action),
        [
            ("Queue".to_string(), "support".to_string()),
            ("Rules".to_string(), "yes".to_string()),
            ("Parameters".to_string(), "yes".to_string()),
        ],
        "the members left out by selecting the other parts"
    );
    let members: Action = QueueReload::new().members().into();
    assert_eq!(
        fields(&members),
        [("Members".to_string(), "yes".to_string())]
    );
    // Nothing selected: every part, as Asterisk does it.
    let all: Action = QueueReload::new().into();
    assert_eq!(all.fields().len(), 0);
}
