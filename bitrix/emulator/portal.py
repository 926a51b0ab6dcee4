"""The state of one emulated Bitrix24 portal: tables, credentials, limits, faults and statistics.

``Portal`` is what tests and the sandbox hold: seed it from the synthetic company, simulate
users editing data (``touch``/``add``/``delete``), inject faults, read ``stats``. The REST
methods themselves live in :mod:`bitrix.emulator.methods`; HTTP, auth checks, envelopes and
the rate limits are applied by :mod:`bitrix.emulator.server`.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bitrix.emulator.methods import Methods
from bitrix.emulator.schema import ID_FIELD, PROVIDERS, SCHEMAS, STAMPS
from bitrix.emulator.tables import KYIV, MULTI, QueryCache, Table, as_list, coerce

PLANS = {"standard": (50, 2.0), "enterprise": (250, 5.0)}
ENTITIES = ("user", "department", "company", "contact", "deal", "activity", "invoice", "requisite", "task",
            "comment", "notify", "trigger", "workflow", "status", "productrow")
DEFAULT_SCOPES = ("crm", "task", "user", "department", "im", "bizproc", "disk", "telephony", "messageservice")


@dataclass
class Stats:
    """What the portal saw: HTTP requests (a batch is one), executions and operating time per method."""

    requests: int = 0
    write_requests: int = 0  # requests (a batch is one) that ran at least one write command
    by_method: Counter = field(default_factory=Counter)
    returned: Counter = field(default_factory=Counter)  # method -> rows it answered with
    operating: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    rejected: Counter = field(default_factory=Counter)  # error code -> count (503, 429, 401...)


@dataclass
class Fault:
    method: str | None
    status: int
    error: str
    description: str
    times: int


@dataclass
class Caller:
    """Who is calling: an incoming webhook (user + code) or an application's access token."""

    kind: str  # "webhook" | "oauth"
    user_id: int
    credential: str  # operating-time accounting key (per webhook / per application)
    scopes: tuple[str, ...]
    client_id: str | None = None


@dataclass
class Token:
    access: str
    refresh: str
    client_id: str
    expires: float
    user_id: int


class OperatingWindow:
    """Per (credential, method) execution seconds in one-minute buckets over ten minutes (limits.md)."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[str, str], list[list[float]]] = defaultdict(list)

    def _live(self, key: tuple[str, str], now: float, window: float) -> list[list[float]]:
        b = self.buckets[key]
        while b and b[0][0] + window <= now:
            b.pop(0)
        return b

    def operating(self, key: tuple[str, str], now: float, window: float) -> float:
        return sum(x[1] for x in self._live(key, now, window))

    def reset_at(self, key: tuple[str, str], now: float, window: float) -> int:
        b = self._live(key, now, window)
        return math.ceil((b[0][0] if b else now) + window)

    def record(self, key: tuple[str, str], now: float, seconds: float) -> None:
        b = self.buckets[key]
        if b and now < b[-1][0] + 60:
            b[-1][1] += seconds
        else:
            b.append([now, seconds])


class Portal(Methods):
    """One Bitrix24 portal (cloud behaviour) seeded from a synthetic company."""

    def __init__(self, *, webhook_user: int = 1, webhook_code: str = "sandboxsecret0001", plan: str = "standard",
                 rate_limit: bool = True, time_scale: float = 0.0, scopes: tuple[str, ...] = DEFAULT_SCOPES,
                 domain: str = "sandbox.bitrix24.ua"):
        self.lock = threading.RLock()
        self.tables: dict[str, Table] = {
            name: Table(name, SCHEMAS[name], ID_FIELD.get(name, "ID")) for name in ENTITIES}
        self.webhook_user = webhook_user
        self.webhook_code = webhook_code
        self.plan = plan
        self.bucket_size, self.drain_rate = PLANS[plan]
        self.rate_limit = rate_limit
        self.time_scale = time_scale
        self.scopes = tuple(scopes)
        self.domain = domain
        self.member_id = hashlib.md5(domain.encode()).hexdigest()
        self.clock: Callable[[], datetime] = lambda: datetime.now(KYIV)
        self.limit_time: Callable[[], float] = time.time  # leaky bucket and operating windows (real time)
        self.stats = Stats()
        self.admins: set[int] = {webhook_user}
        # modelled processing cost (seconds): base + COUNT(*) per matching row + per returned row
        self.cost_base = 0.005
        self.cost_count_row = 2.09e-5  # 49.9 s per page on 2,387,743 rows (huge-data.md)
        self.cost_row = 0.0005
        self.operating_limit = 480.0
        self.operating_window = 600.0
        self.request_timeout = 60.0
        self.token_ttl = 3600.0
        self.workflow_templates: dict[int, str] | None = None  # None: any template id exists
        self.cache = QueryCache()
        self.faults: list[Fault] = []
        self.window = OperatingWindow()
        self._bucket_level = 0.0
        self._bucket_t = self.limit_time()
        self._fm_id = 0
        self.apps: dict[str, str] = {}  # client_id -> client_secret
        self.tokens: dict[str, Token] = {}  # access token -> Token
        self.refresh_tokens: dict[str, Token] = {}
        self.app_state: dict[str, list] = defaultdict(list)  # robots, triggers, event bindings, senders
        self.task_comments: list[dict] = []  # task.commentitem.add
        # test hook: called after a request was handled, before the answer leaves; it may sleep (a write
        # that lands but answers late), kill the caller, or return (status, body) to answer instead
        self.after_request: Callable[[str, int, Any], tuple[int, Any] | None] | None = None
        self.uf_labels: dict[tuple[str, str], str] = {}  # (entity, UF_ code) -> the label people see
        self.base_url = ""  # set by the EmulatorServer serving this portal
        self._init_apps()  # installed applications, deliveries, robots, calls, SMS (bitrix.emulator.apps)
        self.write_log: list[tuple[str, dict]] | None = None  # when a list: (method, params) of every write run

    # ------------------------------------------------------------ construction

    @classmethod
    def from_company(cls, company: Any, *, webhook_user: int = 1, webhook_code: str = "sandboxsecret0001",
                     plan: str = "standard", rate_limit: bool = True, time_scale: float = 0.0,
                     scopes: tuple[str, ...] = DEFAULT_SCOPES, compact: bool = False) -> "Portal":
        """A portal holding ``company`` (a :class:`connector.sandbox.SyntheticCompany`);
        ``compact`` for benchmark portals with millions of rows (see :mod:`bitrix.emulator.seed`)."""
        from bitrix.emulator.seed import seed

        portal = cls(webhook_user=webhook_user, webhook_code=webhook_code, plan=plan, rate_limit=rate_limit,
                     time_scale=time_scale, scopes=scopes)
        seed(portal, company, compact=compact)
        portal.admins.add(webhook_user)
        return portal

    def next_fm_id(self) -> int:
        self._fm_id += 1
        return self._fm_id

    @staticmethod
    def task_guid(tid: int) -> str:
        h = hashlib.md5(f"task{tid}".encode()).hexdigest()
        return "{" + f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}" + "}"

    # ------------------------------------------------------------ time

    def now(self) -> datetime:
        """Portal time (aware, Kyiv); writes stamp DATE_MODIFY & co. with it."""
        v = self.clock()
        if v.tzinfo is None:
            v = v.replace(tzinfo=KYIV)
        return v.astimezone(KYIV).replace(microsecond=0)

    # ------------------------------------------------------------ simulated users

    def table(self, entity: str) -> dict[int, dict]:
        """Raw rows of ``entity`` by ID (typed values), for assertions."""
        return self.tables[entity].rows

    def _set(self, t: Table, row: dict, fields: dict) -> set[str]:
        """Store ``fields`` typed; multifields may be given as plain strings; returns the stored names."""
        names = set()
        for k, v in fields.items():
            name = t.canon(k) or k
            ftype = t.schema.get(name)
            if ftype == MULTI:
                items = [x if isinstance(x, dict) else {"VALUE": x} for x in as_list(v)]
                row[name] = self._merge_multi([], items, name)
            elif ftype is not None:
                row[name] = coerce(ftype, v)
            else:
                row[name] = v
            names.add(name)
        if "HAS_PHONE" in t.schema:
            row["HAS_PHONE"] = "Y" if row.get("PHONE") else "N"
            row["HAS_EMAIL"] = "Y" if row.get("EMAIL") else "N"
        return names

    def touch(self, entity: str, id: int, **fields: Any) -> None:
        """A user edits a record: set ``fields`` (portal field names) and stamp the modify time.

        Change rows through here (not via ``table()``), so the query cache sees the edit.
        """
        with self.lock:
            t = self.tables[entity]
            row = t.rows[id]
            names = self._set(t, row, fields)
            stamp = STAMPS[entity][1]
            if stamp and stamp not in names:
                row[stamp] = self.now()
            t.touched(id)
            self.emit(entity, "UPDATE", id)

    def add(self, entity: str, fields: dict) -> int:
        """A user creates a record; returns its ID. An activity or comment moves its owner's
        LAST_ACTIVITY_TIME, as on a real portal."""
        with self.lock:
            t = self.tables[entity]
            row: dict = {}
            self._set(t, row, fields)
            created, modified = STAMPS[entity]
            now = self.now()
            for s in (created, modified):
                if s and row.get(s) is None:
                    row[s] = now
            rid = t.insert(row, row.pop(t.id_field, None))
            if entity == "activity":
                row.setdefault("BINDINGS", [(row.get("OWNER_TYPE_ID"), row.get("OWNER_ID"))])
                row.setdefault("COMPLETED", "N")
                row.setdefault("STATUS", 2 if row["COMPLETED"] == "Y" else 1)
                provider, ptype = PROVIDERS.get(row.get("TYPE_ID") or 6, PROVIDERS[6])
                row.setdefault("PROVIDER_ID", provider)
                row.setdefault("PROVIDER_TYPE_ID", ptype)
                self._bump_owner(row.get("OWNER_TYPE_ID") or 0, row.get("OWNER_ID") or 0, row["CREATED"],
                                 row.get("RESPONSIBLE_ID") or self.webhook_user)
            elif entity == "comment":
                owner_type = {"company": 4, "contact": 3, "deal": 2}.get(str(row.get("ENTITY_TYPE", "")).lower(), 0)
                self._bump_owner(owner_type, row.get("ENTITY_ID") or 0, row["CREATED"],
                                 row.get("AUTHOR_ID") or self.webhook_user)
            self.emit(entity, "ADD", rid)
            return rid

    def drive_files(self, user_id: int) -> dict[str, bytes]:
        """The files on a user's Drive (its root folder), by name, for assertions."""
        d = self._disk()
        root = next(int(st["ROOT_OBJECT_ID"]) for st in d["storages"].values()
                    if st["ENTITY_TYPE"] == "user" and st["ENTITY_ID"] == str(user_id))
        return {o["NAME"]: o["CONTENT"] for o in d["objects"].values() if o["TYPE"] == "file" and str(o["PARENT_ID"]) == str(root)}

    def delete(self, entity: str, id: int) -> None:
        """A user deletes a record."""
        with self.lock:
            self.tables[entity].remove(id)
            self.emit(entity, "DELETE", id)

    def define_uf(self, entity: str, name: str, ftype: str = "str", label: str | None = None) -> None:
        """Create a user field (``UF_CRM_...``) so writes to it are kept (unknown UF writes are ignored)."""
        self.tables[entity].add_field(name, ftype)
        if label:
            self.uf_labels[(entity, name)] = label

    # ------------------------------------------------------------ faults

    def inject_fault(self, method: str | None, status: int, error: str, description: str = "", times: int = 1) -> None:
        """The next ``times`` calls of ``method`` (any HTTP request if None) fail with this body."""
        with self.lock:
            self.faults.append(Fault(method.lower() if method else None, status, error, description, times))

    def take_fault(self, method: str | None, *, any_request: bool) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if (f.method is None and any_request) or (f.method is not None and f.method == method):
                    f.times -= 1
                    if f.times <= 0:
                        self.faults.remove(f)
                    return f
        return None

    # ------------------------------------------------------------ OAuth

    def issue_oauth(self, client_id: str, client_secret: str, *, user_id: int | None = None) -> tuple[str, str]:
        """Install an application: returns ``(access_token, refresh_token)``."""
        with self.lock:
            self.apps[client_id] = client_secret
            return self._issue(client_id, user_id or self.webhook_user)

    def _issue(self, client_id: str, user_id: int) -> tuple[str, str]:
        tok = Token(access=secrets.token_hex(16), refresh=secrets.token_hex(16), client_id=client_id,
                    expires=self.limit_time() + self.token_ttl, user_id=user_id)
        self.tokens[tok.access] = tok
        self.refresh_tokens[tok.refresh] = tok
        return tok.access, tok.refresh

    def expire_tokens(self) -> None:
        """Every access token issued so far is expired from now on (refresh tokens stay valid)."""
        with self.lock:
            for tok in self.tokens.values():
                tok.expires = 0.0

    def refresh(self, client_id: str, client_secret: str, refresh_token: str) -> Token:
        """oauth.bitrix.info ``grant_type=refresh_token``: rotates both tokens."""
        from bitrix.emulator.tables import ApiError

        with self.lock:
            if self.apps.get(client_id) != client_secret or not client_id:
                raise ApiError(401, "invalid_client", "Invalid client credentials")
            old = self.refresh_tokens.pop(refresh_token, None)
            if old is None or old.client_id != client_id:
                raise ApiError(400, "invalid_grant", "Invalid grant")
            self.tokens.pop(old.access, None)
            access, _ = self._issue(client_id, old.user_id)
            return self.tokens[access]

    # ------------------------------------------------------------ limits

    def bucket_drained_in(self) -> float:
        """Seconds until the leaky bucket is empty again (nothing asked meanwhile)."""
        with self.lock:
            level = self._bucket_level - (self.limit_time() - self._bucket_t) * self.drain_rate
            return max(0.0, level / self.drain_rate)

    def bucket_admit(self) -> bool:
        """Leaky bucket per portal: +1 per HTTP request, drains ``drain_rate``/s, blocks above ``bucket_size``."""
        with self.lock:
            now = self.limit_time()
            self._bucket_level = max(0.0, self._bucket_level - (now - self._bucket_t) * self.drain_rate)
            self._bucket_t = now
            if self._bucket_level > self.bucket_size:
                return False
            self._bucket_level += 1.0
            return True
