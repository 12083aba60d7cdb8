//! The line editor of `keel chat`'s REPL: rustyline on a thread of its own (it blocks), one line
//! per request, with the line history kept under `$XDG_STATE_HOME/keel/`.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use anyhow::Context as _;

/// What the line editor read.
#[derive(Debug)]
pub(super) enum Input {
    /// A line.
    Line(String),
    /// Ctrl+C at the prompt.
    Interrupted,
    /// Ctrl+D, or the end of stdin.
    Eof,
    /// The terminal failed.
    Failed(String),
}

/// The line editor on a thread of its own (rustyline blocks), one line per request.
pub(super) struct LineReader {
    requests: std::sync::mpsc::Sender<(String, tokio::sync::oneshot::Sender<Input>)>,
}

impl LineReader {
    /// Starts the editor thread, loading the line history when stdin is a terminal.
    pub(super) fn spawn() -> anyhow::Result<Self> {
        let config = rustyline::Config::builder()
            .max_history_size(1_000)
            .and_then(|b| b.history_ignore_dups(true))
            .map(|b| b.history_ignore_space(true).auto_add_history(false).build())
            .context("cannot configure the line editor")?;
        let mut editor = rustyline::DefaultEditor::with_config(config).context("cannot start the line editor")?;
        // Piped input is not the user's typing: keep it out of their history file.
        let history = if std::io::stdin().is_terminal() { history_path() } else { None };
        if let Some(path) = &history {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = editor.load_history(path);
        }
        let (requests, receiver) = std::sync::mpsc::channel::<(String, tokio::sync::oneshot::Sender<Input>)>();
        std::thread::Builder::new()
            .name("keel-chat-input".into())
            .spawn(move || {
                while let Ok((prompt, reply)) = receiver.recv() {
                    let input = match editor.readline(&prompt) {
                        Ok(line) => {
                            if let Some(path) = &history
                                && !line.trim().is_empty()
                            {
                                let _ = editor.add_history_entry(line.as_str());
                                // Failing to write the history must not end the chat.
                                let _ = editor.save_history(path);
                            }
                            Input::Line(line)
                        }
                        Err(rustyline::error::ReadlineError::Interrupted) => Input::Interrupted,
                        Err(rustyline::error::ReadlineError::Eof) => Input::Eof,
                        Err(err) => Input::Failed(err.to_string()),
                    };
                    if reply.send(input).is_err() {
                        break;
                    }
                }
            })
            .context("cannot start the line editor thread")?;
        Ok(LineReader { requests })
    }

    /// Reads one line.
    pub(super) async fn read(&self, prompt: &str) -> Input {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.requests.send((prompt.to_owned(), reply)).is_err() {
            return Input::Eof;
        }
        answer.await.unwrap_or(Input::Eof)
    }
}

/// `$XDG_STATE_HOME/keel/chat_history`, else `~/.local/state/keel/chat_history`.
fn history_path() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local").join("state")))?;
    Some(state.join("keel").join("chat_history"))
}
