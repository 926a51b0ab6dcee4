"""A deterministic synthetic company that every emulator is seeded from.

One generator, many wire formats: the Bitrix24, 1C and Binotel emulators each render the same
company (the same counterparties, tax ids, phones and managers) in their own shapes, so matching
across systems can be tested and demonstrated. The data is relative to ``anchor`` (the sandbox's
"today") and contains, besides a realistic active majority, one client for every story the rules
must tell: forgotten, ignored-then-released, lost warm/cold, unpaid, 1C debtor, 1C-only buyer,
phone-only relationship, missed call, missed call called back.
"""

from __future__ import annotations

import random
import uuid
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from dateutil.relativedelta import relativedelta

KYIV = timezone(timedelta(hours=2))

FIRST = ["Olena", "Ivan", "Petro", "Oksana", "Andrii", "Iryna", "Mykola", "Tetiana", "Serhii", "Natalia",
         "Dmytro", "Yulia", "Oleh", "Kateryna", "Vasyl", "Svitlana", "Taras", "Halyna", "Roman", "Larysa"]
LAST = ["Shevchenko", "Kovalenko", "Bondarenko", "Tkachenko", "Kravchenko", "Oliinyk", "Shevchuk", "Polishchuk",
        "Lysenko", "Moroz", "Marchenko", "Savchenko", "Rudenko", "Melnyk", "Boiko", "Petrenko"]
WORDS = ["Agro", "Tech", "Trade", "Build", "Food", "Pharm", "Logistic", "Energy", "Steel", "Textile", "Auto",
         "Water", "Print", "Dnipro", "Karpaty", "Polissia", "Sich", "Kyiv", "Lviv", "Odesa"]
SUFFIX = ["LLC", "PJSC", "Group", "Plus", "Service", "Invest"]
MOBILE = ["050", "066", "067", "068", "073", "093", "095", "096", "097", "098", "099", "063"]


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def spell_phone(national10: str, style: int) -> str:
    """The same number as people type it into different systems."""
    n = national10  # 0XXXXXXXXX
    return [
        f"+38{n}",
        f"+38 ({n[:3]}) {n[3:6]}-{n[6:8]}-{n[8:]}",
        f"{n[:3]}-{n[3:6]}-{n[6:8]}-{n[8:]}",
        f"38{n}",
        f"({n[:3]}) {n[3:6]}-{n[6:8]}-{n[8:]}",
        n,
    ][style % 6]


@dataclass
class SManager:
    id: int
    name: str
    last_name: str
    email: str
    active: bool
    department: int
    extension: str
    guid: str  # Catalog_Пользователи Ref_Key

    @property
    def full_name(self) -> str:
        return f"{self.name} {self.last_name}"


@dataclass
class SCompany:
    id: int
    title: str
    responsible: int
    phones: list[str]  # national 10-digit form 0XXXXXXXXX; emulators spell them their own way
    emails: list[str]
    tax_id: str  # EDRPOU, 8 digits
    guid: str  # 1C counterparty Ref_Key
    temperature: str | None  # warm | cold | None
    segment: str  # COMPANY_TYPE: CUSTOMER, VIP, PARTNER
    created: datetime
    modified: datetime
    in_bitrix: bool = True
    in_onec: bool = True
    story: str = ""
    guid_in_crm: bool = False  # the CRM keeps the 1C GUID in a UF field instead of a tax id


@dataclass
class SContact:
    id: int
    company_id: int | None
    name: str
    last_name: str
    phones: list[str]
    emails: list[str]
    birthday: date | None
    responsible: int
    created: datetime
    modified: datetime


@dataclass
class SDeal:
    id: int
    company_id: int | None
    contact_id: int | None
    title: str
    stage: str  # NEW, PREPARATION, WON, LOSE
    semantic: str  # P, S, F
    amount: float
    created: datetime
    closed: datetime | None
    responsible: int
    modified: datetime
    products: list[tuple[str, float, float]] = field(default_factory=list)  # (name, quantity, unit price): deal product rows
    recurring: str | None = None  # a regular deal's period (UF_CRM_RECURRING)
    recurring_start: date | None = None  # and the date its invoices count from (UF_CRM_RECURRING_START)


@dataclass
class SActivity:
    id: int
    owner_type: str  # company | contact | deal
    owner_id: int
    type_id: int  # 1 meeting, 2 call, 4 email, 6 todo
    direction: int  # 1 in, 2 out, 0 n/a
    completed: bool
    start: datetime
    end: datetime
    deadline: datetime
    responsible: int
    subject: str
    created: datetime
    modified: datetime


@dataclass
class SInvoice:
    id: int
    company_id: int
    title: str
    amount: float
    stage: str  # DT31_1:N (new), DT31_1:S (sent), DT31_1:P (paid, success), DT31_1:D (failed)
    begindate: datetime
    closedate: datetime  # due date
    responsible: int
    created: datetime
    modified: datetime
    deal_id: int | None = None  # parentId2: the deal the invoice belongs to
    account_number: str | None = None  # default INV-<id>


@dataclass
class STask:
    id: int
    title: str
    responsible: int
    created_by: int
    deadline: datetime | None
    status: int  # 2 pending, 3 in progress, 5 completed
    created: datetime
    closed: datetime | None
    bindings: list[str]
    description: str
    changed: datetime


@dataclass
class SComment:
    id: int
    entity_type: str  # company | contact | deal
    entity_id: int
    created: datetime
    author: int
    text: str


@dataclass
class SOneCDoc:
    guid: str
    type: str  # order | invoice | sale | payment
    number: str
    date: datetime  # naive-local in 1C; here aware, emulators strip the tz
    counterparty_guid: str
    amount: float
    posted: bool
    deletion_mark: bool
    manager_guid: str | None
    basis_guid: str | None = None
    due: date | None = None
    status: str | None = None  # a 1C order's own status (УТ 11 ``Статус``)
    lines: list[tuple[str, float, float]] = field(default_factory=list)  # (product article, quantity, amount); none: one generic line


# the 1C catalog of goods the synthetic company sells: article -> (name, group); "" is the generic item
PRODUCTS: dict[str, tuple[str, str]] = {
    "": ("Товар", ""),
    "W-19": ("Вода питна 19 л", "Вода"),
    "F-10": ("Картридж фільтра", "Фільтри"),
}


@dataclass
class SDebt:
    counterparty_guid: str
    amount: float
    overdue_amount: float
    due: date


@dataclass
class SCall:
    id: int  # generalCallID
    start: datetime
    call_type: int  # 0 incoming, 1 outgoing
    external_number: str  # as Binotel spells it: 0XXXXXXXXX, "Unknown", 00...
    internal_number: str
    wait: int
    bill: int
    disposition: str
    employee_email: str | None


@dataclass
class SyntheticCompany:
    anchor: datetime
    managers: list[SManager] = field(default_factory=list)
    companies: list[SCompany] = field(default_factory=list)
    contacts: list[SContact] = field(default_factory=list)
    deals: list[SDeal] = field(default_factory=list)
    activities: list[SActivity] = field(default_factory=list)
    invoices: list[SInvoice] = field(default_factory=list)
    tasks: list[STask] = field(default_factory=list)
    comments: list[SComment] = field(default_factory=list)
    onec_docs: list[SOneCDoc] = field(default_factory=list)
    debts: list[SDebt] = field(default_factory=list)
    calls: list[SCall] = field(default_factory=list)
    supervisor_id: int = 1
    stories: dict[str, int] = field(default_factory=dict)  # story name -> company id

    def manager(self, mid: int) -> SManager:
        return next(m for m in self.managers if m.id == mid)

    def company(self, cid: int) -> SCompany:
        return next(c for c in self.companies if c.id == cid)


def generate(
    *,
    companies: int = 40,
    activities_per_company: float = 6,
    seed: int = 7,
    anchor: datetime | None = None,
    stories: bool = True,
    sync_stories: bool = False,
) -> SyntheticCompany:
    """Build the synthetic company. ``companies`` scales from a few dozen to 100k+. ``sync_stories``
    adds the 1C <-> Bitrix24 sync story (one more client, after everything else: the rest is the same)."""
    rng = random.Random(seed)
    anchor = (anchor or datetime(2026, 11, 23, 10, 0, tzinfo=KYIV)).astimezone(KYIV).replace(microsecond=0)
    co = SyntheticCompany(anchor=anchor)

    # Managers: 1 supervisor, sales managers, one fired; 7 and 9 are the release pool.
    n_managers = max(10, min(60, companies // 150))
    for mid in range(1, n_managers + 1):
        first, last = FIRST[(mid * 3) % len(FIRST)], LAST[(mid * 5) % len(LAST)]
        co.managers.append(
            SManager(
                id=mid, name=first, last_name=last, email=f"{first.lower()}.{last.lower()}{mid}@shop.example",
                active=(mid != 4), department=1 if mid == 1 else 2, extension=str(900 + mid), guid=_guid(rng),
            )
        )
    sales = [m.id for m in co.managers if m.id not in (1, 4)]

    ids = {"contact": 0, "deal": 0, "activity": 0, "invoice": 0, "task": 0, "comment": 0, "call": 4683310000, "doc": 0}

    def nid(kind: str) -> int:
        ids[kind] += 1
        return ids[kind]

    def ago(days: float, hour: int = 11) -> datetime:
        """A moment ``days`` before the anchor at about ``hour``; never after the anchor itself."""
        d = anchor - timedelta(days=days)
        return min(d.replace(hour=hour, minute=rng.randint(0, 59), second=0), anchor - timedelta(minutes=1))

    used_phones: set[str] = set()

    def phone() -> str:
        while True:
            p = rng.choice(MOBILE) + f"{rng.randint(0, 9999999):07d}"
            if p not in used_phones:
                used_phones.add(p)
                return p

    def add_activity(owner_type: str, owner_id: int, days_ago: float, responsible: int, *,
                     type_id: int | None = None, completed: bool = True, future: bool = False) -> SActivity:
        type_id = type_id or rng.choice([2, 2, 2, 4, 4, 1])
        start = ago(days_ago, hour=rng.randint(9, 17)) if not future else anchor + timedelta(days=days_ago)
        end = start + timedelta(minutes=rng.randint(2, 40))
        a = SActivity(
            id=nid("activity"), owner_type=owner_type, owner_id=owner_id, type_id=type_id,
            direction=rng.choice([1, 2]) if type_id in (2, 4) else 0, completed=completed,
            start=start, end=end, deadline=start if type_id in (1, 2) else end, responsible=responsible,
            subject={1: "Meeting", 2: "Call", 4: "E-mail", 6: "To do"}.get(type_id, "Activity"),
            created=start - timedelta(hours=1), modified=end,
        )
        co.activities.append(a)
        return a

    def add_deal(c: SCompany, days_ago: float, won: bool | None, amount: float | None = None) -> SDeal:
        created = ago(days_ago + rng.randint(3, 20))
        closed = ago(days_ago) if won is not None else None
        d = SDeal(
            id=nid("deal"), company_id=c.id, contact_id=None, title=f"Order {c.title} #{ids['deal'] + 1}",
            stage={True: "WON", False: "LOSE", None: rng.choice(["NEW", "PREPARATION"])}[won],
            semantic={True: "S", False: "F", None: "P"}[won], amount=amount or float(rng.randint(5, 500) * 100),
            created=created, closed=closed, responsible=c.responsible, modified=closed or created,
        )
        co.deals.append(d)
        return d

    def add_sale(c: SCompany, days_ago: float, amount: float) -> SOneCDoc:
        doc = SOneCDoc(
            guid=_guid(rng), type="sale", number=f"РН-{nid('doc'):06d}", date=ago(days_ago), counterparty_guid=c.guid,
            amount=amount, posted=True, deletion_mark=False, manager_guid=co.manager(c.responsible).guid,
        )
        co.onec_docs.append(doc)
        return doc

    def add_company(title: str, responsible: int, *, days_old: float = 900, story: str = "",
                    temperature: str | None = None, in_bitrix: bool = True, in_onec: bool = True) -> SCompany:
        cid = len(co.companies) + 1
        created = ago(days_old)
        c = SCompany(
            id=cid, title=title, responsible=responsible, phones=[phone()],
            emails=[f"office{cid}@{title.split()[0].lower()}.example"], tax_id=f"{30000000 + cid * 37:08d}",
            guid=_guid(rng), temperature=temperature if temperature is not None else rng.choice(["warm", "cold", None]),
            segment=rng.choice(["CUSTOMER", "CUSTOMER", "CUSTOMER", "VIP", "PARTNER"]), created=created,
            modified=ago(rng.uniform(0, 30)), in_bitrix=in_bitrix, in_onec=in_onec, story=story,
        )
        if rng.random() < 0.3:
            c.phones.append(phone())
        co.companies.append(c)
        if story:
            co.stories[story] = cid
        # one or two contacts per company
        for _ in range(1 if rng.random() < 0.7 else 2):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            bd = date(rng.randint(1960, 2000), rng.randint(1, 12), rng.randint(1, 28)) if rng.random() < 0.6 else None
            co.contacts.append(
                SContact(
                    id=nid("contact"), company_id=cid, name=first, last_name=last, phones=[phone()],
                    emails=[f"{first.lower()}.{last.lower()}{ids['contact']}@mail.example"], birthday=bd,
                    responsible=responsible, created=created, modified=c.modified,
                )
            )
        return c

    # ---- the stories (fixed, small, always present)
    if stories:
        m = sales
        # A forgotten client: last call 75 days ago; the manager will also ignore the task.
        c = add_company("Karpaty Timber LLC", m[0], story="forgotten", temperature="warm")
        add_activity("company", c.id, 75, c.responsible, type_id=2)
        add_deal(c, 75, True)
        add_deal(c, 160, True)
        add_sale(c, 75, 12000)
        # Forgotten, but a future task keeps it (keep_while_future_task).
        c = add_company("Polissia Dairy PJSC", m[1], story="kept_by_future_task")
        add_activity("company", c.id, 80, c.responsible, type_id=4)
        co.tasks.append(STask(id=nid("task"), title="Call after vacation", responsible=c.responsible, created_by=c.responsible,
                              deadline=anchor + timedelta(days=10), status=2, created=ago(5), closed=None,
                              bindings=[f"CO_{c.id}"], description="Client on vacation until next month", changed=ago(5)))
        # Contact only through a timeline comment 20 days ago (messenger deal): not forgotten.
        c = add_company("Sich Logistic Group", m[2], story="comment_counts")
        add_activity("company", c.id, 95, c.responsible, type_id=2)
        co.comments.append(SComment(id=nid("comment"), entity_type="company", entity_id=c.id, created=ago(20),
                                    author=c.responsible, text="Agreed the new order in Telegram"))
        # Phone-only relationship: nothing in the CRM for 100 days, Binotel calls every week.
        c = add_company("Dnipro Steel Service", m[3], story="phone_only")
        add_activity("company", c.id, 100, c.responsible, type_id=2)
        for k in range(0, 60, 7):
            co.calls.append(SCall(id=nid("call"), start=ago(k + 1, hour=12), call_type=rng.choice([0, 1]),
                                  external_number=c.phones[0], internal_number=co.manager(c.responsible).extension,
                                  wait=rng.randint(3, 20), bill=rng.randint(60, 600), disposition="ANSWER",
                                  employee_email=co.manager(c.responsible).email))
        # Lost, warm: bought three times, last purchase 200 days ago; no contact since then.
        c = add_company("Odesa Food Trade", m[4], story="lost_warm", temperature="warm")
        for d in (200, 260, 330):
            add_deal(c, d, True)
        add_activity("company", c.id, 40, c.responsible, type_id=2)  # talks, but no purchase
        # Lost, cold.
        c = add_company("Lviv Print Plus", m[5], story="lost_cold", temperature="cold")
        for d in (210, 300):
            add_deal(c, d, True)
        add_activity("company", c.id, 30, c.responsible, type_id=4)
        # Lost, found from 1C sales only (the CRM has no won deals).
        c = add_company("Kyiv Pharm Invest", m[0], story="lost_from_1c", temperature="warm")
        for d in (190, 250, 320):
            add_sale(c, d, 8000)
        add_activity("company", c.id, 25, c.responsible, type_id=2)
        # Unpaid invoice: due 10 days ago, not paid.
        c = add_company("Agro Energy Group", m[1], story="unpaid")
        add_activity("company", c.id, 12, c.responsible, type_id=2)
        add_deal(c, 12, True)
        co.invoices.append(SInvoice(id=nid("invoice"), company_id=c.id, title=f"Invoice #{ids['invoice']} for {c.title}",
                                    amount=18500.0, stage="DT31_1:S", begindate=ago(24), closedate=ago(10),
                                    responsible=c.responsible, created=ago(24), modified=ago(24)))
        # 1C debtor: receivable 42 000 overdue for 20 days.
        c = add_company("Textile Karpaty Service", m[2], story="debtor", in_bitrix=True)
        add_activity("company", c.id, 9, c.responsible, type_id=2)
        add_sale(c, 35, 42000)
        co.debts.append(SDebt(counterparty_guid=c.guid, amount=42000.0, overdue_amount=42000.0, due=(anchor - timedelta(days=20)).date()))
        # The CRM stores this one's 1C GUID in a UF field (no tax id in requisites).
        c = add_company("Build Auto Plus", m[3], story="guid_match")
        c.guid_in_crm = True
        add_activity("company", c.id, 4, c.responsible, type_id=2)
        # Missed call from a known client 40 minutes ago, nobody called back.
        c = add_company("Water Polissia LLC", m[4], story="missed_call")
        add_activity("company", c.id, 6, c.responsible, type_id=2)
        co.calls.append(SCall(id=nid("call"), start=anchor - timedelta(minutes=40), call_type=0,
                              external_number=c.phones[0], internal_number="Sales queue", wait=35, bill=0,
                              disposition="NOANSWER", employee_email=None))
        # Missed call, then called back within 10 minutes: nothing to do.
        c = add_company("Steel Lviv Group", m[5], story="called_back")
        add_activity("company", c.id, 3, c.responsible, type_id=2)
        t0 = anchor - timedelta(minutes=90)
        co.calls.append(SCall(id=nid("call"), start=t0, call_type=0, external_number=c.phones[0],
                              internal_number="Sales queue", wait=28, bill=0, disposition="CANCEL", employee_email=None))
        co.calls.append(SCall(id=nid("call"), start=t0 + timedelta(minutes=8), call_type=1, external_number=c.phones[0],
                              internal_number=co.manager(c.responsible).extension, wait=6, bill=140,
                              disposition="ANSWER", employee_email=co.manager(c.responsible).email))
        # A 1C-only counterparty (not in the CRM): reported as unmatched.
        add_company("Chernihiv Grain Trade", m[0], story="onec_only", in_bitrix=False)
        co.calls.append(SCall(id=nid("call"), start=anchor - timedelta(hours=5), call_type=0, external_number="Unknown",
                              internal_number="Sales queue", wait=12, bill=0, disposition="NOANSWER", employee_email=None))

    # ---- the active majority
    n_story = len(co.companies)
    total_acts = int(companies * activities_per_company)
    for _ in range(max(0, companies - n_story)):
        title = f"{rng.choice(WORDS)} {rng.choice(WORDS)} {rng.choice(SUFFIX)}"
        c = add_company(title, rng.choice(sales), days_old=rng.uniform(60, 1500))
        # recent contact for nearly everyone, so a default run acts on a small share
        add_activity("company", c.id, rng.uniform(0, 40), c.responsible)
        for _ in range(rng.randint(0, 2)):
            add_deal(c, rng.uniform(5, 120), rng.choice([True, True, False, None]))
        if rng.random() < 0.3:
            add_sale(c, rng.uniform(5, 150), float(rng.randint(10, 900) * 100))
        if rng.random() < 0.15:
            co.invoices.append(SInvoice(id=nid("invoice"), company_id=c.id, title=f"Invoice #{ids['invoice'] + 1}",
                                        amount=float(rng.randint(10, 400) * 100), stage=rng.choice(["DT31_1:P", "DT31_1:P", "DT31_1:N"]),
                                        begindate=ago(20), closedate=anchor + timedelta(days=rng.randint(1, 20)),
                                        responsible=c.responsible, created=ago(20), modified=ago(rng.uniform(0, 20))))
        if rng.random() < 0.1:
            co.tasks.append(STask(id=nid("task"), title="Send price list", responsible=c.responsible, created_by=1,
                                  deadline=ago(rng.uniform(-5, 30)), status=rng.choice([2, 5, 5]), created=ago(35),
                                  closed=None, bindings=[f"CO_{c.id}"], description="", changed=ago(rng.uniform(0, 30))))
            if co.tasks[-1].status == 5:
                co.tasks[-1].closed = co.tasks[-1].deadline
        if rng.random() < 0.2:
            co.calls.append(SCall(id=nid("call"), start=ago(rng.uniform(0.2, 20), hour=rng.randint(9, 17)),
                                  call_type=rng.choice([0, 1]), external_number=c.phones[0],
                                  internal_number=co.manager(c.responsible).extension, wait=rng.randint(2, 30),
                                  bill=rng.randint(20, 900), disposition="ANSWER", employee_email=co.manager(c.responsible).email))
    # spread the remaining activities over companies, contacts and deals (history)
    remaining = total_acts - len(co.activities)
    contacts_by_company = {}
    for ct in co.contacts:
        contacts_by_company.setdefault(ct.company_id, []).append(ct.id)
    story_ids = set(co.stories.values())
    pool = [c for c in co.companies if c.id not in story_ids and c.in_bitrix]
    for _ in range(max(0, remaining)):
        c = rng.choice(pool) if pool else co.companies[0]
        r = rng.random()
        if r < 0.6 or not contacts_by_company.get(c.id):
            add_activity("company", c.id, rng.uniform(1, 700), c.responsible)
        else:
            add_activity("contact", rng.choice(contacts_by_company[c.id]), rng.uniform(1, 700), c.responsible)
    if stories:
        _repeat_sales(co, add_company, add_deal, add_sale, add_activity)
    if stories and sync_stories:
        _paid_in_1c(co, add_company, add_activity, add_deal, nid, ago, rng)
    return co


def _repeat_sales(co: SyntheticCompany, add_company, add_deal, add_sale, add_activity) -> None:
    """The repeat-sales stories, added after everything else so the rest of the company stays as it was.

    ``replenish``: bought five 19-litre bottles of water 13 days ago, in the CRM (a won deal with a
    product row) and in 1C (the shipment with the article): at three days a bottle it runs out in
    two days. ``recurring``: a monthly filter service whose invoices count from a month ago, so one
    is due today."""
    m = sorted(co.stories.values())
    c = add_company("Kyiv Water Home", co.company(m[0]).responsible, story="replenish", temperature="warm")
    add_activity("company", c.id, 5, c.responsible, type_id=2)
    d = add_deal(c, 13, True, amount=600.0)
    d.products = [("Вода питна 19 л", 5.0, 120.0)]
    sale = add_sale(c, 13, 600.0)
    sale.lines = [("W-19", 5.0, 600.0)]
    c = add_company("Filter Service Lviv", co.company(m[1]).responsible, story="recurring", temperature="warm")
    add_activity("company", c.id, 4, c.responsible, type_id=2)
    d = add_deal(c, 40, True, amount=900.0)
    d.products = [("Картридж фільтра", 2.0, 450.0)]
    d.recurring = "monthly"
    d.recurring_start = co.anchor.date() - relativedelta(months=1)



def _paid_in_1c(co: SyntheticCompany, add_company, add_activity, add_deal, nid, ago, rng: random.Random) -> None:
    """1C <-> Bitrix24 sync: two Bitrix24 invoices of one client, both also issued in 1C under the
    same number; the first (on an open deal) is paid in full in 1C, the second only in part.

    Added after everything else, so every other story and the active majority stay as they were."""
    c = add_company("Energy Textile Trade", co.managers[2].id, story="paid_in_1c", temperature="cold")
    add_activity("company", c.id, 3, c.responsible, type_id=2)
    deal = add_deal(c, 0, None, amount=24000.0)
    deal.stage, deal.semantic = "EXECUTING", "P"
    for amount, paid, deal_id in ((24000.0, 24000.0, deal.id), (15000.0, 5000.0, None)):
        inv = SInvoice(id=nid("invoice"), company_id=c.id, title="", amount=amount, stage="DT31_1:S", begindate=ago(6), closedate=co.anchor + timedelta(days=8),
                       responsible=c.responsible, created=ago(6), modified=ago(6), deal_id=deal_id)
        inv.title = f"Invoice #{inv.id}"
        co.invoices.append(inv)
        onec_invoice = SOneCDoc(guid=_guid(rng), type="invoice", number=f"INV-{inv.id:05d}", date=ago(6), counterparty_guid=c.guid,
                                amount=amount, posted=True, deletion_mark=False, manager_guid=co.manager(c.responsible).guid,
                                due=(co.anchor + timedelta(days=8)).date())
        co.onec_docs.append(onec_invoice)
        co.onec_docs.append(SOneCDoc(guid=_guid(rng), type="payment", number=f"ПН-{nid('doc'):06d}", date=ago(2),
                                     counterparty_guid=c.guid, amount=paid, posted=True, deletion_mark=False, manager_guid=None,
                                     basis_guid=onec_invoice.guid))


# ---------------------------------------------------------------- benchmark scale

_TYPES = (2, 2, 2, 4, 4, 1)  # call, call, call, e-mail, e-mail, meeting (as generate() draws them)
_SUBJECTS = {1: "Meeting", 2: "Call", 4: "E-mail", 6: "To do"}
_OWNER_KINDS = ("company", "contact", "deal")


class ActivityLog(Sequence):
    """Millions of activities kept as columns (about 20 bytes each); iterating builds each
    :class:`SActivity` on the fly, exactly as ``generate()``'s ``add_activity`` shapes it."""

    def __init__(self, head: list[SActivity], first_id: int):
        self.head = list(head)  # the stories' activities, as generated
        self.first_id = first_id
        self.owner_kind = array("b")
        self.owner_id = array("l")
        self.type_id = array("b")
        self.direction = array("b")
        self.completed = array("b")
        self.start = array("q")  # Unix seconds
        self.minutes = array("h")
        self.responsible = array("h")

    def add(self, owner_kind: int, owner_id: int, type_id: int, direction: int, completed: bool, start: int,
            minutes: int, responsible: int) -> None:
        self.owner_kind.append(owner_kind)
        self.owner_id.append(owner_id)
        self.type_id.append(type_id)
        self.direction.append(direction)
        self.completed.append(completed)
        self.start.append(start)
        self.minutes.append(minutes)
        self.responsible.append(responsible)

    def __len__(self) -> int:
        return len(self.head) + len(self.start)

    def _make(self, i: int) -> SActivity:
        type_id = self.type_id[i]
        start = datetime.fromtimestamp(self.start[i], KYIV)
        end = start + timedelta(minutes=self.minutes[i])
        return SActivity(
            id=self.first_id + i, owner_type=_OWNER_KINDS[self.owner_kind[i]], owner_id=self.owner_id[i],
            type_id=type_id, direction=self.direction[i], completed=bool(self.completed[i]), start=start, end=end,
            deadline=start if type_id in (1, 2) else end, responsible=self.responsible[i],
            subject=_SUBJECTS.get(type_id, "Activity"), created=start - timedelta(hours=1), modified=end)

    def __getitem__(self, i: int | slice) -> SActivity | list[SActivity]:  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.head[i] if i < len(self.head) else self._make(i - len(self.head))

    def __iter__(self) -> Iterator[SActivity]:
        yield from self.head
        for i in range(len(self.start)):
            yield self._make(i)


def generate_at_scale(
    companies: int,
    *,
    seed: int = 11,
    anchor: datetime | None = None,
    deals_per_company: float = 3.0,
    activities_per_company: float = 20.0,
    invoices_per_company: float = 0.5,
    tasks_per_company: float = 0.2,
    calls_per_company: float = 0.3,
    sale_share: float = 0.3,
    quiet_share: float = 0.1,
    kept_share: float = 0.25,
    lost_share: float = 0.08,
    overdue_share: float = 0.06,
    debtor_share: float = 0.001,
    missed_share: float = 0.0005,
) -> SyntheticCompany:
    """A company at benchmark scale: ``generate()``'s stories plus ``companies`` clients in the
    proportions given per company (deals, activities, invoices, tasks, Binotel calls, the share
    with 1C sales), with rule work in known shares: ``quiet_share`` of clients had no contact for
    62-300 days (``kept_share`` of those keep a task due in the future), ``lost_share`` bought
    two or more times, the last 190-500 days ago, ``overdue_share`` of invoices are unpaid past
    their due date, ``debtor_share`` owe 1C money overdue, ``missed_share`` called in the last two
    hours without an answer. Activities are kept as columns (:class:`ActivityLog`): 2M take
    about 45 MB and a few seconds to draw.
    """
    rng = random.Random(seed)
    co = generate(companies=0, seed=seed, anchor=anchor)  # the stories, their managers, the anchor
    anchor = co.anchor
    now_ts = int(anchor.timestamp())
    offset = int(anchor.utcoffset().total_seconds())  # the sandbox's fixed Kyiv offset

    n_managers = max(10, min(60, companies // 150))
    for mid in range(len(co.managers) + 1, n_managers + 1):
        first, last = FIRST[(mid * 3) % len(FIRST)], LAST[(mid * 5) % len(LAST)]
        co.managers.append(SManager(
            id=mid, name=first, last_name=last, email=f"{first.lower()}.{last.lower()}{mid}@shop.example",
            active=True, department=2, extension=str(900 + mid), guid=_guid(rng)))
    sales = [m.id for m in co.managers if m.id not in (1, 4)]
    by_id = {m.id: m for m in co.managers}

    used_phones = {p for c in co.companies for p in c.phones} | {p for ct in co.contacts for p in ct.phones}

    def phone() -> str:
        while True:
            p = rng.choice(MOBILE) + f"{rng.randint(0, 9999999):07d}"
            if p not in used_phones:
                used_phones.add(p)
                return p

    def at(days: float, hour: int | None = None) -> int:
        """Unix time ``days`` before the anchor at a working hour; never after the anchor."""
        t = now_ts - int(days * 86400)
        local_midnight = t + offset - (t + offset) % 86400 - offset
        t = local_midnight + (hour if hour is not None else rng.randint(9, 17)) * 3600 + rng.randint(0, 59) * 60
        return min(t, now_ts - 60)

    def dt(ts: int) -> datetime:
        return datetime.fromtimestamp(ts, KYIV)

    ids = {"contact": max((c.id for c in co.contacts), default=0), "deal": max((d.id for d in co.deals), default=0),
           "invoice": max((i.id for i in co.invoices), default=0), "task": max((t.id for t in co.tasks), default=0),
           "call": max((c.id for c in co.calls), default=4683310000), "doc": len(co.onec_docs)}

    def nid(kind: str) -> int:
        ids[kind] += 1
        return ids[kind]

    log = ActivityLog(co.activities, max((a.id for a in co.activities), default=0) + 1)
    co.activities = log  # type: ignore[assignment]  # a Sequence, iterated like the list
    per_company_acts = max(0.0, activities_per_company)

    for _ in range(companies):
        cid = len(co.companies) + 1
        resp = rng.choice(sales)
        title = f"{rng.choice(WORDS)} {rng.choice(WORDS)} {rng.choice(SUFFIX)}"
        created = dt(at(rng.uniform(60, 1500)))
        c = SCompany(
            id=cid, title=title, responsible=resp, phones=[phone()], emails=[f"office{cid}@{title.split()[0].lower()}.example"],
            tax_id=f"{30000000 + cid * 37:08d}", guid=_guid(rng), temperature=rng.choice(["warm", "cold", None]),
            segment=rng.choice(["CUSTOMER", "CUSTOMER", "CUSTOMER", "VIP", "PARTNER"]), created=created,
            modified=dt(at(rng.uniform(0, 30))),
        )
        if rng.random() < 0.3:
            c.phones.append(phone())
        co.companies.append(c)
        contact_ids = []
        for _ in range(1 if rng.random() < 0.7 else 2):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            bd = date(rng.randint(1960, 2000), rng.randint(1, 12), rng.randint(1, 28)) if rng.random() < 0.6 else None
            ct = SContact(id=nid("contact"), company_id=cid, name=first, last_name=last, phones=[phone()],
                          emails=[f"{first.lower()}.{last.lower()}{ids['contact']}@mail.example"], birthday=bd,
                          responsible=resp, created=created, modified=c.modified)
            co.contacts.append(ct)
            contact_ids.append(ct.id)

        r = rng.random()
        quiet = r < quiet_share
        lost = not quiet and r < quiet_share + lost_share
        # a quiet client's newest evidence of contact (activity, deal, invoice, 1C document and the
        # payment 3 days after it) is older than this; 0 for the others
        silent_days = rng.uniform(62, 300) + 5 if quiet else 0.0

        # deals: a lost client bought 2-4 times long ago; others buy now and then
        n_deals = rng.randint(2, 4) if lost else rng.randint(0, max(0, round(2 * deals_per_company)))
        deal_ids = []
        had_won = False
        for k in range(n_deals):
            if lost:
                won, age = True, rng.uniform(190, 500) + 60 * k
            else:
                won = rng.choice([True, True, False, None])
                if won and not had_won:  # a buying client's newest purchase is recent
                    age, had_won = rng.uniform(5, 150) + silent_days, True
                else:
                    age = rng.uniform(5, 700) + silent_days
            closed = dt(at(age)) if won is not None else None
            d_created = dt(at(age + rng.randint(3, 20)))
            d = SDeal(id=nid("deal"), company_id=cid, contact_id=None, title=f"Order {title} #{ids['deal'] + 1}",
                      stage={True: "WON", False: "LOSE", None: rng.choice(["NEW", "PREPARATION"])}[won],
                      semantic={True: "S", False: "F", None: "P"}[won], amount=float(rng.randint(5, 500) * 100),
                      created=d_created, closed=closed, responsible=resp, modified=closed or d_created)
            co.deals.append(d)
            deal_ids.append(d.id)

        # activities: the newest sets the client's last contact; the rest is history
        n_acts = rng.randint(0, max(0, round(2 * per_company_acts) - 1)) + 1 if per_company_acts else 0
        for k in range(n_acts):
            if k == 0:
                days = silent_days + rng.uniform(0, 40) if quiet else rng.uniform(0, 40)
            else:
                days = rng.uniform(max(1.0, silent_days), 700 + silent_days)
            owner = rng.random()
            if owner < 0.6 or (not contact_ids and not deal_ids):
                kind, oid = 0, cid
            elif owner < 0.85 and contact_ids:
                kind, oid = 1, rng.choice(contact_ids)
            elif deal_ids:
                kind, oid = 2, rng.choice(deal_ids)
            else:
                kind, oid = 1, rng.choice(contact_ids)
            type_id = rng.choice(_TYPES)
            log.add(kind, oid, type_id, rng.choice([1, 2]) if type_id in (2, 4) else 0, True, at(days),
                    rng.randint(2, 40), resp)

        if rng.random() < invoices_per_company:
            overdue = rng.random() < overdue_share
            issued = rng.uniform(20, 60) + silent_days
            co.invoices.append(SInvoice(
                id=nid("invoice"), company_id=cid, title=f"Invoice #{ids['invoice']}", amount=float(rng.randint(10, 400) * 100),
                stage="DT31_1:S" if overdue else rng.choice(["DT31_1:P", "DT31_1:P", "DT31_1:N"]),
                begindate=dt(at(issued)), closedate=dt(at(rng.uniform(4, 40))) if overdue else anchor + timedelta(days=rng.randint(1, 20)),
                responsible=resp, created=dt(at(issued)), modified=dt(at(issued - rng.uniform(0, 15)))))

        if quiet and rng.random() < kept_share:  # a reminder due in the future keeps the client
            co.tasks.append(STask(id=nid("task"), title="Call after the holidays", responsible=resp, created_by=resp,
                                  deadline=anchor + timedelta(days=rng.randint(1, 30)), status=2,
                                  created=dt(at(silent_days + 1)), closed=None, bindings=[f"CO_{cid}"], description="",
                                  changed=dt(at(silent_days + 1))))
        elif not quiet and rng.random() < tasks_per_company:
            done = rng.random() < 0.6
            due_in = rng.uniform(-30, 10)  # days from now: most are past, some still ahead
            deadline = anchor + timedelta(days=due_in) if due_in > 0 and not done else dt(at(abs(due_in)))
            co.tasks.append(STask(id=nid("task"), title="Send price list", responsible=resp, created_by=1,
                                  deadline=deadline, status=5 if done else 2, created=dt(at(35)),
                                  closed=deadline if done else None, bindings=[f"CO_{cid}"], description="",
                                  changed=dt(at(rng.uniform(0, 30)))))

        if rng.random() < sale_share:
            age = rng.uniform(190, 500) if lost else rng.uniform(5, 150) + silent_days
            sale = SOneCDoc(guid=_guid(rng), type="sale", number=f"РН-{nid('doc'):06d}", date=dt(at(age)),
                            counterparty_guid=c.guid, amount=float(rng.randint(10, 900) * 100), posted=True,
                            deletion_mark=False, manager_guid=by_id[resp].guid)
            co.onec_docs.append(sale)
            if not lost and rng.random() < debtor_share / max(sale_share, 1e-9):
                overdue_days = rng.randint(10, 60)
                co.debts.append(SDebt(counterparty_guid=c.guid, amount=sale.amount, overdue_amount=sale.amount,
                                      due=(anchor - timedelta(days=overdue_days)).date()))

        m = by_id[resp]
        if not quiet and rng.random() < calls_per_company:
            co.calls.append(SCall(id=nid("call"), start=dt(at(rng.uniform(0.2, 25))), call_type=rng.choice([0, 1]),
                                  external_number=c.phones[0], internal_number=m.extension, wait=rng.randint(2, 30),
                                  bill=rng.randint(20, 900), disposition="ANSWER", employee_email=m.email))
        if rng.random() < missed_share:
            co.calls.append(SCall(id=nid("call"), start=anchor - timedelta(minutes=rng.randint(20, 110)), call_type=0,
                                  external_number=c.phones[0], internal_number="Sales queue", wait=rng.randint(15, 60),
                                  bill=0, disposition="NOANSWER", employee_email=None))
    co.calls.sort(key=lambda x: x.id)
    return co
