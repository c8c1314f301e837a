//! `chat.db`: the relay's SQLite database in the data directory.
//!
//! Every message is inserted (and the transaction committed with
//! `synchronous=FULL`) before it is acknowledged or delivered, so nothing a
//! sender was told about is lost to a crash. `seq` is the table's
//! AUTOINCREMENT key: increasing, never reused. Rooms keep their last
//! `history` messages; direct messages are kept until delivered, then the
//! last `history` of each conversation.
//!
//! Only the relay writes, from one task, so the order of `seq` is the order
//! of delivery.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::{ChatError, Message, UserRef, MAX_REPLAY};

/// File name inside the data directory.
pub const DB_FILE: &str = "chat.db";

const MIGRATIONS: &[&str] = &["
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    conv TEXT NOT NULL,
    sender_key TEXT NOT NULL,
    sender TEXT NOT NULL,
    room TEXT,
    to_key TEXT,
    to_name TEXT,
    text TEXT NOT NULL
);
CREATE INDEX messages_conv ON messages (conv, seq);
CREATE INDEX messages_to ON messages (to_key, seq) WHERE to_key IS NOT NULL;
CREATE INDEX messages_from_dm ON messages (sender_key, seq) WHERE to_key IS NOT NULL;
CREATE TABLE rooms (key TEXT PRIMARY KEY, name TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE members (
    room TEXT NOT NULL REFERENCES rooms (key),
    user_key TEXT NOT NULL,
    user_name TEXT NOT NULL,
    joined INTEGER NOT NULL,
    PRIMARY KEY (room, user_key)
);
CREATE TABLE cursors (user_key TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE contacts (a TEXT NOT NULL, b TEXT NOT NULL, PRIMARY KEY (a, b));
"];

/// The conversation key of a room.
pub fn room_conv(room_key: &str) -> String {
    format!("#{room_key}")
}

/// The conversation key of two users' direct messages (either order).
pub fn dm_conv(a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    format!("@{x}/{y}")
}

/// Where a message to be stored goes.
#[derive(Debug, Clone)]
pub enum Dest {
    Room { key: String, name: String },
    User(UserRef),
}

/// A message to be stored.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub from: UserRef,
    pub dest: Dest,
    pub text: String,
    pub ts: i64,
    /// A direct message whose recipient is online now: it counts as
    /// delivered, so it is not delivered again at the next login.
    pub delivered: bool,
}

/// What the relay loads at start: rooms, memberships and contacts.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// (key, name)
    pub rooms: Vec<(String, String)>,
    /// (room key, member)
    pub members: Vec<(String, UserRef)>,
    /// Pairs of user keys who have exchanged direct messages.
    pub contacts: Vec<(String, String)>,
}

/// The chat database.
#[derive(Debug)]
pub struct ChatDb {
    conn: Connection,
}

fn row_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        seq: r.get(0)?,
        ts: r.get(1)?,
        from: r.get(2)?,
        room: r.get(3)?,
        to: r.get(4)?,
        text: r.get(5)?,
    })
}

const SELECT: &str = "SELECT seq, ts, sender, room, to_name, text FROM messages";

impl ChatDb {
    /// Opens (creating or migrating) `chat.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<ChatDb, ChatError> {
        let path = data_dir.join(DB_FILE);
        crate::store::mode::ensure_private_file(&path)
            .map_err(|e| ChatError::Internal(format!("{}: {e}", path.display())))?;
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > MIGRATIONS.len() {
            return Err(ChatError::Internal(format!(
                "chat.db schema version {version} is newer than this sockit understands; upgrade sockit"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(ChatDb { conn })
    }

    /// Rooms, memberships and contacts, for the relay's memory.
    pub fn snapshot(&self) -> Result<Snapshot, ChatError> {
        let mut snap = Snapshot::default();
        let mut q = self.conn.prepare("SELECT key, name FROM rooms")?;
        for row in q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
            snap.rooms.push(row?);
        }
        let mut q = self
            .conn
            .prepare("SELECT room, user_key, user_name FROM members ORDER BY joined")?;
        for row in q.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                UserRef {
                    key: r.get(1)?,
                    name: r.get(2)?,
                },
            ))
        })? {
            snap.members.push(row?);
        }
        let mut q = self.conn.prepare("SELECT a, b FROM contacts")?;
        for row in q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
            snap.contacts.push(row?);
        }
        Ok(snap)
    }

    /// Stores a batch in one transaction and returns each message's `seq`.
    /// Older messages beyond `keep` per conversation are removed (direct
    /// messages only once delivered).
    pub fn store(&mut self, batch: &[NewMessage], keep: usize) -> Result<Vec<i64>, ChatError> {
        let tx = self.conn.transaction()?;
        let mut seqs = Vec::with_capacity(batch.len());
        let mut convs: Vec<(String, bool)> = Vec::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO messages (ts, conv, sender_key, sender, room, to_key, to_name, text)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut cursor = tx.prepare_cached(
                "INSERT INTO cursors (user_key, seq) VALUES (?1, ?2)
                 ON CONFLICT (user_key) DO UPDATE SET seq = max(seq, excluded.seq)",
            )?;
            let mut contact =
                tx.prepare_cached("INSERT OR IGNORE INTO contacts (a, b) VALUES (?1, ?2)")?;
            for m in batch {
                let (conv, room, to_key, to_name) = match &m.dest {
                    Dest::Room { key, name } => (room_conv(key), Some(name.as_str()), None, None),
                    Dest::User(u) => (
                        dm_conv(&m.from.key, &u.key),
                        None,
                        Some(u.key.as_str()),
                        Some(u.name.as_str()),
                    ),
                };
                insert.execute(params![
                    m.ts,
                    conv,
                    m.from.key,
                    m.from.name,
                    room,
                    to_key,
                    to_name,
                    m.text
                ])?;
                let seq = tx.last_insert_rowid();
                seqs.push(seq);
                if let Dest::User(u) = &m.dest {
                    if m.delivered {
                        cursor.execute(params![u.key, seq])?;
                    }
                    contact.execute(params![m.from.key, u.key])?;
                    contact.execute(params![u.key, m.from.key])?;
                }
                let direct = matches!(m.dest, Dest::User(_));
                if !convs.iter().any(|(c, _)| *c == conv) {
                    convs.push((conv, direct));
                }
            }
        }
        for (conv, direct) in convs {
            // The `keep`-th newest message's seq: everything at or before
            // the one after it may go.
            let cutoff: Option<i64> = tx
                .query_row(
                    "SELECT seq FROM messages WHERE conv = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2",
                    params![conv, keep as i64],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(cutoff) = cutoff else { continue };
            if direct {
                // Never drop a direct message its recipient has not had.
                tx.execute(
                    "DELETE FROM messages WHERE conv = ?1 AND seq <= ?2 AND seq <=
                       coalesce((SELECT seq FROM cursors WHERE user_key = messages.to_key), 0)",
                    params![conv, cutoff],
                )?;
            } else {
                tx.execute(
                    "DELETE FROM messages WHERE conv = ?1 AND seq <= ?2",
                    params![conv, cutoff],
                )?;
            }
        }
        tx.commit()?;
        Ok(seqs)
    }

    /// Makes `user` a member of the room, creating it if needed. Returns the
    /// room's name as first created.
    pub fn join(
        &mut self,
        room_key: &str,
        room_name: &str,
        user: &UserRef,
        ts: i64,
    ) -> Result<String, ChatError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO rooms (key, name, created) VALUES (?1, ?2, ?3)",
            params![room_key, room_name, ts],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO members (room, user_key, user_name, joined) VALUES (?1, ?2, ?3, ?4)",
            params![room_key, user.key, user.name, ts],
        )?;
        let name: String =
            tx.query_row("SELECT name FROM rooms WHERE key = ?1", [room_key], |r| {
                r.get(0)
            })?;
        tx.commit()?;
        Ok(name)
    }

    /// Ends a membership.
    pub fn leave(&mut self, room_key: &str, user_key: &str) -> Result<(), ChatError> {
        self.conn.execute(
            "DELETE FROM members WHERE room = ?1 AND user_key = ?2",
            params![room_key, user_key],
        )?;
        Ok(())
    }

    /// Up to `limit` messages of a conversation before `before` (or the
    /// latest), oldest first.
    pub fn history(
        &self,
        conv: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Message>, ChatError> {
        let mut q = self.conn.prepare_cached(&format!(
            "{SELECT} WHERE conv = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
        ))?;
        let rows = q.query_map(
            params![conv, before.unwrap_or(i64::MAX), limit as i64],
            row_message,
        )?;
        let mut out = rows.collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// The direct messages `user` has not had yet, oldest first (at most
    /// [`MAX_REPLAY`]; the flag says there were more), now counted as
    /// delivered.
    pub fn undelivered(&mut self, user_key: &str) -> Result<(Vec<Message>, bool), ChatError> {
        let cursor = self.cursor(user_key)?;
        let mut out = self.query_after(
            &format!("{SELECT} WHERE to_key = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"),
            user_key,
            cursor,
        )?;
        let truncated = out.len() > MAX_REPLAY;
        out.truncate(MAX_REPLAY);
        self.advance_cursor(user_key, &out)?;
        Ok((out, truncated))
    }

    /// Every message after `since` in the user's rooms and conversations
    /// that is still kept, oldest first (at most [`MAX_REPLAY`]).
    pub fn since(
        &mut self,
        user_key: &str,
        room_keys: &[String],
        since: i64,
    ) -> Result<(Vec<Message>, bool), ChatError> {
        let mut out = Vec::new();
        for room in room_keys {
            let mut q = self.conn.prepare_cached(&format!(
                "{SELECT} WHERE conv = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            ))?;
            let rows = q.query_map(
                params![room_conv(room), since, MAX_REPLAY as i64 + 1],
                row_message,
            )?;
            for m in rows {
                out.push(m?);
            }
        }
        out.extend(self.query_after(
            &format!("{SELECT} WHERE to_key = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"),
            user_key,
            since,
        )?);
        out.extend(self.query_after(
            &format!(
                "{SELECT} WHERE sender_key = ?1 AND to_key IS NOT NULL AND seq > ?2 ORDER BY seq LIMIT ?3"
            ),
            user_key,
            since,
        )?);
        out.sort_by_key(|m| m.seq);
        out.dedup_by_key(|m| m.seq);
        let truncated = out.len() > MAX_REPLAY;
        out.truncate(MAX_REPLAY);
        let to_me: Vec<Message> = out.iter().filter(|m| m.to.is_some()).cloned().collect();
        self.advance_cursor(user_key, &to_me)?;
        Ok((out, truncated))
    }

    fn query_after(&self, sql: &str, key: &str, after: i64) -> Result<Vec<Message>, ChatError> {
        let mut q = self.conn.prepare_cached(sql)?;
        let rows = q.query_map(params![key, after, MAX_REPLAY as i64 + 1], row_message)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn cursor(&self, user_key: &str) -> Result<i64, ChatError> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq FROM cursors WHERE user_key = ?1",
                [user_key],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    fn advance_cursor(&mut self, user_key: &str, delivered: &[Message]) -> Result<(), ChatError> {
        if let Some(last) = delivered.iter().map(|m| m.seq).max() {
            self.conn.execute(
                "INSERT INTO cursors (user_key, seq) VALUES (?1, ?2)
                 ON CONFLICT (user_key) DO UPDATE SET seq = max(seq, excluded.seq)",
                params![user_key, last],
            )?;
        }
        Ok(())
    }

    /// The largest `seq` ever given (0 before the first message).
    pub fn last_seq(&self) -> Result<i64, ChatError> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'messages'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserRef {
        UserRef {
            key: name.to_ascii_lowercase(),
            name: name.into(),
        }
    }

    fn room_msg(from: &str, room: &str, text: &str) -> NewMessage {
        NewMessage {
            from: user(from),
            dest: Dest::Room {
                key: room.to_ascii_lowercase(),
                name: room.into(),
            },
            text: text.into(),
            ts: 1,
            delivered: false,
        }
    }

    fn dm(from: &str, to: &str, text: &str, delivered: bool) -> NewMessage {
        NewMessage {
            from: user(from),
            dest: Dest::User(user(to)),
            text: text.into(),
            ts: 1,
            delivered,
        }
    }

    #[test]
    fn rooms_keep_their_last_messages() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = ChatDb::open(dir.path()).unwrap();
        db.join("lobby", "Lobby", &user("alice"), 1).unwrap();
        let batch: Vec<_> = (0..10)
            .map(|i| room_msg("alice", "Lobby", &i.to_string()))
            .collect();
        let seqs = db.store(&batch, 4).unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        let h = db.history(&room_conv("lobby"), None, 100).unwrap();
        let texts: Vec<_> = h.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["6", "7", "8", "9"]);
        let older = db.history(&room_conv("lobby"), Some(h[2].seq), 1).unwrap();
        assert_eq!(older[0].text, "7");
        assert_eq!(db.last_seq().unwrap(), seqs[9]);
    }

    #[test]
    fn direct_messages_wait_for_their_recipient() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = ChatDb::open(dir.path()).unwrap();
        let batch: Vec<_> = (0..5)
            .map(|i| dm("alice", "Bob", &i.to_string(), false))
            .collect();
        db.store(&batch, 2).unwrap();
        // Not delivered: none pruned despite keep = 2.
        let (got, more) = db.undelivered("bob").unwrap();
        assert!(!more);
        let texts: Vec<_> = got.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["0", "1", "2", "3", "4"]);
        assert_eq!(got[0].to.as_deref(), Some("Bob"));
        // Delivered once only.
        assert!(db.undelivered("bob").unwrap().0.is_empty());
        // Now delivered, the next store prunes to the last 2.
        db.store(&[dm("alice", "bob", "5", true)], 2).unwrap();
        let h = db.history(&dm_conv("alice", "bob"), None, 100).unwrap();
        assert_eq!(h.len(), 2);
        let snap = db.snapshot().unwrap();
        assert!(snap.contacts.contains(&("bob".into(), "alice".into())));
    }

    #[test]
    fn since_covers_rooms_and_both_directions_of_direct_messages() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = ChatDb::open(dir.path()).unwrap();
        db.join("a", "a", &user("alice"), 1).unwrap();
        let s = db
            .store(
                &[
                    room_msg("bob", "a", "1"),
                    dm("bob", "alice", "2", true),
                    dm("alice", "bob", "3", true),
                    room_msg("bob", "other", "4"),
                ],
                100,
            )
            .unwrap();
        let (got, _) = db.since("alice", &["a".into()], s[0] - 1).unwrap();
        let texts: Vec<_> = got.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["1", "2", "3"]);
        let (got, _) = db.since("alice", &["a".into()], s[1]).unwrap();
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn reopening_keeps_messages_and_memberships() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut db = ChatDb::open(dir.path()).unwrap();
            db.join("lobby", "Lobby", &user("alice"), 1).unwrap();
            db.store(&[dm("alice", "bob", "hi", false)], 100).unwrap();
        }
        let mut db = ChatDb::open(dir.path()).unwrap();
        assert_eq!(db.snapshot().unwrap().members.len(), 1);
        assert_eq!(db.undelivered("bob").unwrap().0[0].text, "hi");
        // The name stays as first created.
        assert_eq!(db.join("lobby", "LOBBY", &user("bob"), 2).unwrap(), "Lobby");
    }
}
