//! The Kubernetes commands: `vmc labels` (node labels from probe files) and `vmc affinity`
//! (a pod's node affinity from a document). The logic is the compiler's `kube` module.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vmc_compiler::kube;

use crate::files::{read_document, registry};
use crate::hosts::{load_hosts, unmeasured_lines};
use crate::{pretty, Failure, PlatformPaths};

/// `vmc labels`: for each probe file, the labels of its host; plain, as `kubectl label`
/// commands that also remove every other label vmc knows (so running them again after
/// the host changed, such as a kernel upgrade that lost USO, leaves no stale label).
pub(crate) fn labels(files: &[PathBuf], paths: &PlatformPaths, json: bool) -> Result<u8, Failure> {
    let registry = registry(paths)?;
    // The same reading as `vmc place`: a file that states no CPU features is refused.
    let hosts = load_hosts(&registry, files)?;
    let known = kube::known_keys(&registry);
    let mut seen: BTreeMap<&str, &Path> = BTreeMap::new();
    let mut list = Vec::new();
    let mut text = String::new();
    for ((label, host), file) in hosts.iter().zip(files) {
        let name = host.platform.name.as_str();
        if let Some(first) = seen.insert(name, file) {
            errln!(
                "warning: {} and {} both describe host `{name}`: the labels of the later one replace the earlier",
                first.display(),
                file.display()
            );
        }
        if !host.unmeasured.is_empty() {
            errln!(
                "warning: {label} was not measured in full: it gets no label for what was not measured, so no VM that needs it is placed there\n{}",
                unmeasured_lines(label, &host.unmeasured).trim_end()
            );
        }
        let node = kube::node_labels(host, &registry);
        if !node.unlabelled.is_empty() {
            errln!(
                "warning: {label}: no Kubernetes label can name {} (no document needs them)",
                node.unlabelled.join(", ")
            );
        }
        if json {
            list.push(serde_json::json!({ "host": name, "labels": node.labels }));
            continue;
        }
        text += &format!("kubectl label node {} --overwrite", shell_word(name));
        for (key, value) in &node.labels {
            text += &format!(" \\\n    {key}={value}");
        }
        for key in known.iter().filter(|k| !node.labels.contains_key(*k)) {
            text += &format!(" \\\n    {key}-");
        }
        text += "\n";
    }
    if json {
        outln!("{}", pretty(&serde_json::Value::Array(list)));
    } else {
        out!("{text}");
    }
    Ok(0)
}

/// `vmc affinity`: the node affinity of FILE's pod, as YAML for a pod's `affinity:` or
/// as JSON.
pub(crate) fn affinity(file: &Path, json: bool) -> Result<u8, Failure> {
    let doc = read_document(file)?;
    let affinity = kube::affinity(&doc).map_err(|e| Failure::Message(format!("{}: {e}", file.display())))?;
    if json {
        outln!("{}", pretty(&affinity.to_json()));
    } else {
        outln!("# the nodes that vmc labels as able to run {}", doc.hash);
        out!("{}", affinity.to_yaml());
    }
    Ok(0)
}

/// `name` as one shell word: as it is when it holds only characters no shell treats
/// specially, else in single quotes.
fn shell_word(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@' | '+'))
    {
        name.to_string()
    } else {
        format!("'{}'", name.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn names_are_one_shell_word() {
        assert_eq!(shell_word("node-1.example"), "node-1.example");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
