"""A persistent response cache (SQLite) keyed by endpoint, model, messages and parameters."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any


def cache_key(endpoint: str, model: str, messages: Any, params: dict) -> str:
    payload = json.dumps({"endpoint": endpoint, "model": model, "messages": messages, "params": params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, text TEXT NOT NULL, model TEXT)")
        self._db.commit()

    def get(self, key: str) -> tuple[str, str] | None:
        with self._lock:
            row = self._db.execute("SELECT text, model FROM responses WHERE key = ?", (key,)).fetchone()
        return (row[0], row[1]) if row else None

    def put(self, key: str, text: str, model: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses (key, text, model) VALUES (?, ?, ?)", (key, text, model))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
