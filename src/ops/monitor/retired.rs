//! Mailboxes a reload removed. The recorder (metrics-exporter-prometheus 0.18) can
//! forget a series only when it has been idle for a while, which would also drop the
//! live gauges that rarely change; so a removed mailbox's series are cut from the
//! exposition instead, until a reload adds the name back.

use std::collections::HashSet;

/// The names of mailboxes that were configured in this process and no longer are.
#[derive(Debug, Default)]
pub(super) struct Retired(HashSet<String>);

impl Retired {
    /// A reload moved from the mailboxes named `before` to those named `after`.
    pub(super) fn reloaded<'a>(
        &mut self,
        before: impl IntoIterator<Item = &'a str>,
        after: &[&str],
    ) {
        for name in before {
            if !after.contains(&name) {
                self.0.insert(name.to_string());
            }
        }
        for name in after {
            self.0.remove(*name);
        }
    }

    /// `exposition` without the samples labelled with a retired mailbox.
    pub(super) fn filter(&self, exposition: String) -> String {
        if self.0.is_empty() {
            return exposition;
        }
        let mut kept = String::with_capacity(exposition.len());
        for line in exposition.split_inclusive('\n') {
            if !mailbox_label(line).is_some_and(|name| self.0.contains(name)) {
                kept.push_str(line);
            }
        }
        kept
    }
}

/// The value of a sample line's `mailbox` label. Mailbox names are letters, digits and
/// `-_.@` (the configuration refuses anything else), so the value is written as is,
/// without escapes; a quote inside another label's value is escaped (`\"`) and can never
/// be read as the start of this label.
fn mailbox_label(line: &str) -> Option<&str> {
    if line.starts_with('#') {
        return None;
    }
    let (_, labels) = line.split_once('{')?;
    let value = match labels.strip_prefix("mailbox=\"") {
        Some(value) => value,
        None => labels.split_once(",mailbox=\"")?.1,
    };
    Some(value.split_once('"')?.0)
}
