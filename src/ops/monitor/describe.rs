//! The help text and unit of every metric, shown as `# HELP` lines in the exposition.

use metrics::{KeyName, Recorder, Unit};
use metrics_exporter_prometheus::PrometheusRecorder;

use super::name;

pub(super) fn describe(recorder: &PrometheusRecorder) {
    let counter = |metric: &'static str, unit: Option<Unit>, help: &'static str| {
        recorder.describe_counter(KeyName::from_const_str(metric), unit, help.into())
    };
    counter(
        name::FETCHED,
        None,
        "Messages downloaded (whole, or headers only when oversized).",
    );
    counter(
        name::FETCHED_BYTES,
        Some(Unit::Bytes),
        "Bytes of messages downloaded.",
    );
    counter(
        name::DELIVERED,
        None,
        "Events the webhook accepted with a 2xx.",
    );
    counter(
        name::PARKED_TOTAL,
        None,
        "Messages parked because their retries ran out.",
    );
    counter(
        name::DELIVERY_FAILURES,
        None,
        "Failed webhook POSTs, by reason: network, timeout, redirect, gone, http_4xx, http_5xx.",
    );
    counter(
        name::CONNECTIONS_OPENED,
        None,
        "Connections (TCP, and TLS for https) opened to a webhook endpoint (scheme://host:port); compare with delivered events to see reuse.",
    );
    counter(
        name::CYCLES,
        None,
        "Mailbox cycles, by result: ok (server reached) or error.",
    );
    let gauge = |metric: &'static str, unit: Option<Unit>, help: &'static str| {
        recorder.describe_gauge(KeyName::from_const_str(metric), unit, help.into())
    };
    gauge(
        name::LAST_SUCCESS,
        Some(Unit::Seconds),
        "Unix time when a cycle last ended without error.",
    );
    gauge(name::RETRYING, None, "Messages waiting for a retry.");
    gauge(
        name::PARKED,
        None,
        "Parked messages waiting for an operator.",
    );
    gauge(
        name::OLDEST_AGE,
        Some(Unit::Seconds),
        "Age of the oldest undelivered (retrying or parked) message, from its first failed attempt; 0 when none.",
    );
    gauge(
        name::ENDPOINT_DISABLED,
        None,
        "1 when the webhook answered 410 Gone and nothing is posted.",
    );
    gauge(
        name::LEFT_ALONE,
        None,
        "Listed messages the last cycle left on the server without fetching them (unusable UIDL).",
    );
    gauge(name::BUILD_INFO, None, "Always 1; the version is a label.");
    gauge(
        name::OAUTH2_EXPIRY,
        Some(Unit::Seconds),
        "Unix time when the mailbox's current OAuth2 access token expires (auth: xoauth2, from the token endpoint's expires_in).",
    );
    let histogram = |metric: &'static str, help: &'static str| {
        recorder.describe_histogram(
            KeyName::from_const_str(metric),
            Some(Unit::Seconds),
            help.into(),
        )
    };
    histogram(name::CYCLE_DURATION, "How long a mailbox cycle took.");
    histogram(
        name::WEBHOOK_DURATION,
        "How long a webhook POST took until its answer or failure.",
    );
}
