//! `vmc completions SHELL` and `vmc man [COMMAND]`: vmc's command line described for a
//! shell's completion and for man(1), generated from the same definitions as `--help`.

use clap::CommandFactory;

use crate::files::stdout_bytes;
use crate::{Cli, Failure};

/// The shells `vmc completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Shell {
    /// bash: `source <(vmc completions bash)`, or save it in
    /// /usr/share/bash-completion/completions/vmc.
    Bash,
    /// zsh: save it as `_vmc` in a directory of $fpath.
    Zsh,
    /// fish: save it as ~/.config/fish/completions/vmc.fish.
    Fish,
}

impl From<Shell> for clap_complete::Shell {
    fn from(s: Shell) -> Self {
        match s {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// `vmc completions SHELL`: the completion script, on standard output.
pub(crate) fn completions(shell: Shell) -> Result<u8, Failure> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(clap_complete::Shell::from(shell), &mut cmd, "vmc", &mut script);
    stdout_bytes(&script)?;
    Ok(0)
}

/// `vmc man [COMMAND]`: the roff page of vmc (vmc.1, which lists every command) or of one
/// of its commands (`vmc man compile`: vmc-compile.1), on standard output.
pub(crate) fn man(command: Option<&str>) -> Result<u8, Failure> {
    let mut cmd = Cli::command();
    cmd.build();
    let page = match command {
        None => cmd,
        Some(name) => {
            let names: Vec<String> = cmd.get_subcommands().map(|c| c.get_name().to_string()).collect();
            // Built, a command's display name is `vmc-compile` (the page's title, as
            // git-commit(1)) and its binary name `vmc compile` (its synopsis).
            let sub = cmd
                .find_subcommand(name)
                .cloned()
                .ok_or_else(|| Failure::Message(format!("no command `{name}` (vmc has: {})", names.join(", "))))?;
            sub.version(env!("CARGO_PKG_VERSION"))
        }
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .map_err(|e| Failure::Message(format!("cannot render the man page: {e}")))?;
    stdout_bytes(&roff)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument and option of every command says what it is in `--help`.
    #[test]
    fn every_argument_and_option_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "vmc", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:?}");
    }
}
