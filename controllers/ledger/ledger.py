"""The double-entry token ledger: atomic, idempotent postings that never overdraw.

Every write is one database transaction that

1. looks the ``event_id`` up among journal transactions and remembered refusals: a known
   event returns the first result (or raises the first refusal) without writing;
2. locks the affected account rows (PostgreSQL ``SELECT ... FOR UPDATE`` in account-id
   order, so two writers never deadlock; SQLite ``BEGIN IMMEDIATE``, one writer at a time)
   and looks the ``event_id`` up again under the locks;
3. checks that no account but the mint source would go below zero, else remembers the
   refusal and raises :class:`InsufficientFundsError` (no posting is written);
4. inserts the journal transaction and its postings and updates the balances.

A concurrent insert of the same ``event_id`` that slips past step 2 fails on the unique
key; the loser rolls back and returns the winner's entry. Sign convention: see
:mod:`controllers.ledger.models` (``amount > 0`` credits, balance = sum of postings).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controllers.ledger.db import LedgerDb
from controllers.ledger.models import Account, JournalTxn, PostingRow, Rejection
from controllers.ledger.types import to_amount

SYSTEM = "system"


class AccountKind(StrEnum):
    """Kinds of account."""

    TREASURY = "treasury"
    ESCROW = "escrow"
    WALLET = "wallet"
    MINT_SOURCE = "mint_source"


class TxnKind(StrEnum):
    """Kinds of journal transaction (each restricts which accounts it may touch)."""

    MINT = "mint"
    TRANSFER = "transfer"
    FREEZE = "freeze"
    RELEASE = "release"
    CLAWBACK = "clawback"
    BURN = "burn"


class Verification(StrEnum):
    """Outcome of the physics audit of a session (the audit itself lives elsewhere)."""

    VERIFIED = "verified"
    PENDING = "pending"
    FAILED = "failed"


class LedgerError(Exception):
    """Base class of ledger errors."""


class InvalidPostingError(LedgerError, ValueError):
    """The postings are malformed (unbalanced, wrong accounts for the kind, bad amount)."""


class InsufficientFundsError(LedgerError):
    """A posting would have made an account other than the mint source negative."""

    def __init__(self, event_id: str, reason: str) -> None:
        super().__init__(f"{event_id}: {reason}")
        self.event_id = event_id
        self.reason = reason


class IdempotencyConflictError(LedgerError):
    """An event id was reused with different content."""


class UnverifiedSessionError(LedgerError):
    """Minting was asked for a session that is not physics-verified."""


@dataclass(frozen=True, order=True)
class AccountRef:
    """Names an account: ``kind``, ``owner`` and token/currency ``code``."""

    kind: AccountKind
    owner: str
    code: str

    @classmethod
    def treasury(cls, code: str) -> AccountRef:
        """The treasury account for ``code``."""
        return cls(AccountKind.TREASURY, SYSTEM, code)

    @classmethod
    def mint_source(cls, code: str) -> AccountRef:
        """The mint source for ``code`` (balance = minus the tokens in circulation)."""
        return cls(AccountKind.MINT_SOURCE, SYSTEM, code)

    @classmethod
    def wallet(cls, owner: str, code: str) -> AccountRef:
        """The wallet of ``owner`` (a driver)."""
        return cls(AccountKind.WALLET, owner, code)

    @classmethod
    def escrow(cls, owner: str, code: str) -> AccountRef:
        """The escrow account holding ``owner``'s frozen credits."""
        return cls(AccountKind.ESCROW, owner, code)


@dataclass(frozen=True)
class Posting:
    """One leg: ``amount > 0`` credits ``account``, ``amount < 0`` debits it."""

    account: AccountRef
    amount: Decimal


@dataclass(frozen=True)
class JournalEntry:
    """A posted journal transaction; ``replayed`` is True when an earlier post returned."""

    txn_id: int
    event_id: str
    kind: TxnKind
    session_id: str | None
    rule_id: str | None
    actor: str | None
    memo: str
    created_at: datetime
    postings: tuple[Posting, ...]
    replayed: bool = False


_KIND_RULES: dict[TxnKind, tuple[frozenset[AccountKind], frozenset[AccountKind]]] = {
    # kind: (accounts that may be debited, accounts that may be credited)
    TxnKind.MINT: (
        frozenset({AccountKind.MINT_SOURCE}),
        frozenset({AccountKind.TREASURY, AccountKind.WALLET, AccountKind.ESCROW}),
    ),
    TxnKind.TRANSFER: (
        frozenset({AccountKind.TREASURY, AccountKind.WALLET}),
        frozenset({AccountKind.TREASURY, AccountKind.WALLET}),
    ),
    TxnKind.FREEZE: (frozenset({AccountKind.WALLET}), frozenset({AccountKind.ESCROW})),
    TxnKind.RELEASE: (frozenset({AccountKind.ESCROW}), frozenset({AccountKind.WALLET})),
    TxnKind.CLAWBACK: (
        frozenset({AccountKind.ESCROW}),
        frozenset({AccountKind.TREASURY, AccountKind.MINT_SOURCE}),
    ),
    TxnKind.BURN: (
        frozenset({AccountKind.TREASURY, AccountKind.WALLET, AccountKind.ESCROW}),
        frozenset({AccountKind.MINT_SOURCE}),
    ),
}


def _normalise(kind: TxnKind, postings: Sequence[Posting]) -> tuple[Posting, ...]:
    """Validate postings and merge legs on the same account; sorted by account."""
    if not postings:
        raise InvalidPostingError("a transaction needs postings")
    merged: dict[AccountRef, Decimal] = defaultdict(Decimal)
    codes = set()
    for p in postings:
        if not isinstance(p.account, AccountRef):
            raise InvalidPostingError(f"not an AccountRef: {p.account!r}")
        try:
            amount = to_amount(p.amount)
        except ValueError as exc:
            raise InvalidPostingError(str(exc)) from exc
        merged[p.account] += amount
        codes.add(p.account.code)
    if len(codes) != 1:
        raise InvalidPostingError(f"one token/currency code per transaction, got {sorted(codes)}")
    legs = tuple(Posting(a, amt) for a, amt in sorted(merged.items()) if amt != 0)
    if len(legs) < 2:
        raise InvalidPostingError("a transaction moves value between at least two accounts")
    if sum((p.amount for p in legs), Decimal(0)) != 0:
        raise InvalidPostingError("postings of a transaction must sum to zero")
    debit_ok, credit_ok = _KIND_RULES[kind]
    for p in legs:
        allowed = debit_ok if p.amount < 0 else credit_ok
        if p.account.kind not in allowed:
            side = "debit" if p.amount < 0 else "credit"
            raise InvalidPostingError(f"{kind}: may not {side} a {p.account.kind} account")
    return legs


def _ref(account: Account) -> AccountRef:
    return AccountRef(AccountKind(account.kind), account.owner, account.code)


def _entry(txn: JournalTxn, *, replayed: bool) -> JournalEntry:
    legs = tuple(
        sorted((Posting(_ref(p.account), p.amount) for p in txn.postings), key=lambda p: p.account)
    )
    return JournalEntry(
        txn_id=txn.id,
        event_id=txn.event_id,
        kind=TxnKind(txn.kind),
        session_id=txn.session_id,
        rule_id=txn.rule_id,
        actor=txn.actor,
        memo=txn.memo,
        created_at=txn.created_at,
        postings=legs,
        replayed=replayed,
    )


class Ledger:
    """Double-entry ledger on an open :class:`LedgerDb` (thread-safe: a session per call)."""

    def __init__(self, db: LedgerDb) -> None:
        self.db = db

    # -- writing ---------------------------------------------------------------------

    def post(
        self,
        event_id: str,
        kind: TxnKind,
        postings: Sequence[Posting],
        *,
        at: datetime,
        session_id: str | None = None,
        rule_id: str | None = None,
        memo: str = "",
        actor: str | None = None,
        remember_rejection: bool = True,
    ) -> JournalEntry:
        """Post one balanced transaction atomically and idempotently on ``event_id``.

        Returns the entry; if ``event_id`` was already posted, returns that entry with
        ``replayed=True`` and writes nothing (raises :class:`IdempotencyConflictError` if the
        kind or postings differ). Raises :class:`InsufficientFundsError` if an account other
        than the mint source would go negative; the refusal is remembered (unless
        ``remember_rejection`` is False) so replaying the same event refuses it again.
        """
        if not event_id:
            raise InvalidPostingError("event_id is required")
        kind = TxnKind(kind)
        legs = _normalise(kind, postings)
        if at.tzinfo is None or at.utcoffset() is None:
            raise InvalidPostingError("at must be a timezone-aware UTC datetime")
        try:
            with self.db.sessions() as s, s.begin():
                known = self._known(s, event_id, kind, legs)
                if known is not None:
                    return known
                # the savepoint undoes accounts created for a refused posting
                savepoint = s.begin_nested()
                accounts = self._lock_accounts(s, [p.account for p in legs])
                # again under the locks: a concurrent post of this event (same accounts,
                # so it held these locks) has committed by now and is visible (PostgreSQL
                # READ COMMITTED reads the latest committed rows at each statement)
                known = self._known(s, event_id, kind, legs)
                if known is not None:
                    savepoint.commit()
                    return known
                refusal = _refusal(legs, accounts)
                if refusal is not None:
                    savepoint.rollback()
                    if remember_rejection:
                        s.add(
                            Rejection(
                                event_id=event_id, kind=kind.value, reason=refusal, created_at=at
                            )
                        )
                        s.commit()
                    else:
                        s.rollback()
                    raise InsufficientFundsError(event_id, refusal)
                txn = JournalTxn(
                    event_id=event_id,
                    kind=kind.value,
                    session_id=session_id,
                    rule_id=rule_id,
                    actor=actor,
                    created_at=at,
                    memo=memo,
                )
                s.add(txn)
                s.flush()  # a concurrent duplicate event_id fails here
                for p in legs:
                    acc = accounts[p.account]
                    s.add(PostingRow(transaction_id=txn.id, account_id=acc.id, amount=p.amount))
                    acc.balance = acc.balance + p.amount
                s.flush()
                entry = JournalEntry(
                    txn_id=txn.id,
                    event_id=event_id,
                    kind=kind,
                    session_id=session_id,
                    rule_id=rule_id,
                    actor=actor,
                    memo=memo,
                    created_at=txn.created_at.astimezone(UTC),
                    postings=legs,
                )
            return entry
        except IntegrityError:
            # lost a race on the unique event_id (or a remembered rejection): replay
            with self.db.sessions() as s, s.begin():
                known = self._known(s, event_id, kind, legs)
            if known is None:
                raise
            return known

    def _known(
        self, s: Session, event_id: str, kind: TxnKind, legs: tuple[Posting, ...]
    ) -> JournalEntry | None:
        txn = s.scalars(select(JournalTxn).where(JournalTxn.event_id == event_id)).first()
        if txn is not None:
            entry = _entry(txn, replayed=True)
            if entry.kind != kind or entry.postings != legs:
                raise IdempotencyConflictError(
                    f"event {event_id!r} was posted as {entry.kind} {entry.postings}, "
                    f"now {kind} {legs}"
                )
            return entry
        rej = s.get(Rejection, event_id)
        if rej is not None:
            if rej.kind != kind:
                raise IdempotencyConflictError(f"event {event_id!r} was refused as {rej.kind}")
            raise InsufficientFundsError(event_id, rej.reason)
        return None

    def _lock_accounts(self, s: Session, refs: Iterable[AccountRef]) -> dict[AccountRef, Account]:
        """Create missing accounts, then lock all in id order (FOR UPDATE on PostgreSQL)."""
        refs = sorted(set(refs))
        dialect = s.get_bind().dialect.name
        ins = pg_insert if dialect == "postgresql" else sqlite_insert
        for r in refs:
            stmt = (
                ins(Account)
                .values(kind=r.kind.value, owner=r.owner, code=r.code, balance=Decimal(0))
                .on_conflict_do_nothing(index_elements=["kind", "owner", "code"])
            )
            s.execute(stmt)
        conds = [
            (Account.kind == r.kind.value) & (Account.owner == r.owner) & (Account.code == r.code)
            for r in refs
        ]
        q = select(Account).where(or_(*conds)).order_by(Account.id).with_for_update()
        rows = s.scalars(q.execution_options(populate_existing=True)).all()
        found = {_ref(a): a for a in rows}
        assert set(found) == set(refs), "account rows missing after insert"
        return found

    def mint(
        self,
        event_id: str,
        to: AccountRef,
        amount: Decimal,
        *,
        at: datetime,
        verified: Verification | bool,
        session_id: str | None = None,
        rule_id: str | None = None,
        memo: str = "",
        actor: str | None = None,
    ) -> JournalEntry:
        """Mint ``amount`` from the mint source into ``to``; only for verified sessions."""
        if verified is not True and verified != Verification.VERIFIED:
            raise UnverifiedSessionError(f"{event_id}: session {session_id!r} is {verified!s}")
        return self.post(
            event_id,
            TxnKind.MINT,
            _pair(AccountRef.mint_source(to.code), to, amount),
            at=at,
            session_id=session_id,
            rule_id=rule_id,
            memo=memo,
            actor=actor,
        )

    def transfer(
        self,
        event_id: str,
        src: AccountRef,
        dst: AccountRef,
        amount: Decimal,
        *,
        at: datetime,
        session_id: str | None = None,
        rule_id: str | None = None,
        memo: str = "",
        actor: str | None = None,
    ) -> JournalEntry:
        """Move ``amount`` from ``src`` to ``dst`` (wallets and treasury)."""
        return self.post(
            event_id,
            TxnKind.TRANSFER,
            _pair(src, dst, amount),
            at=at,
            session_id=session_id,
            rule_id=rule_id,
            memo=memo,
            actor=actor,
        )

    def freeze(
        self,
        event_id: str,
        owner: str,
        code: str,
        amount: Decimal,
        *,
        at: datetime,
        actor: str,
        session_id: str | None = None,
        memo: str = "",
    ) -> JournalEntry:
        """A fleet manager (``actor``) freezes ``owner``'s credits: wallet -> escrow."""
        return self.post(
            event_id,
            TxnKind.FREEZE,
            _pair(AccountRef.wallet(owner, code), AccountRef.escrow(owner, code), amount),
            at=at,
            session_id=session_id,
            memo=memo,
            actor=actor,
        )

    def release(
        self,
        event_id: str,
        owner: str,
        code: str,
        amount: Decimal,
        *,
        at: datetime,
        actor: str,
        session_id: str | None = None,
        memo: str = "",
    ) -> JournalEntry:
        """Release frozen credits back to the wallet: escrow -> wallet."""
        return self.post(
            event_id,
            TxnKind.RELEASE,
            _pair(AccountRef.escrow(owner, code), AccountRef.wallet(owner, code), amount),
            at=at,
            session_id=session_id,
            memo=memo,
            actor=actor,
        )

    def clawback(
        self,
        event_id: str,
        owner: str,
        code: str,
        amount: Decimal,
        *,
        at: datetime,
        actor: str,
        burn: bool = False,
        session_id: str | None = None,
        memo: str = "",
    ) -> JournalEntry:
        """Claw frozen credits back: escrow -> treasury (or -> mint source if ``burn``)."""
        dst = AccountRef.mint_source(code) if burn else AccountRef.treasury(code)
        return self.post(
            event_id,
            TxnKind.CLAWBACK,
            _pair(AccountRef.escrow(owner, code), dst, amount),
            at=at,
            session_id=session_id,
            memo=memo,
            actor=actor,
        )

    def burn(
        self,
        event_id: str,
        src: AccountRef,
        amount: Decimal,
        *,
        at: datetime,
        session_id: str | None = None,
        rule_id: str | None = None,
        memo: str = "",
        actor: str | None = None,
    ) -> JournalEntry:
        """Destroy ``amount`` held by ``src`` (back into the mint source)."""
        return self.post(
            event_id,
            TxnKind.BURN,
            _pair(src, AccountRef.mint_source(src.code), amount),
            at=at,
            session_id=session_id,
            rule_id=rule_id,
            memo=memo,
            actor=actor,
        )

    # -- reading ---------------------------------------------------------------------

    def balance(self, account: AccountRef) -> Decimal:
        """Balance of ``account`` (zero if it does not exist yet)."""
        with self.db.sessions() as s, s.begin():
            acc = s.scalars(
                select(Account).where(
                    Account.kind == account.kind.value,
                    Account.owner == account.owner,
                    Account.code == account.code,
                )
            ).first()
            return acc.balance if acc is not None else Decimal(0).quantize(Decimal("0.000001"))

    def balances(self, code: str | None = None) -> dict[AccountRef, Decimal]:
        """All account balances (of ``code`` if given), zero balances included."""
        with self.db.sessions() as s, s.begin():
            q = select(Account).order_by(Account.id)
            if code is not None:
                q = q.where(Account.code == code)
            return {_ref(a): a.balance for a in s.scalars(q)}

    def entries(
        self,
        *,
        session_id: str | None = None,
        rule_id: str | None = None,
        code: str | None = None,
        after_txn_id: int = 0,
    ) -> list[JournalEntry]:
        """Journal entries in posting order, filtered by session, rule and/or code."""
        with self.db.sessions() as s, s.begin():
            q = select(JournalTxn).where(JournalTxn.id > after_txn_id).order_by(JournalTxn.id)
            if session_id is not None:
                q = q.where(JournalTxn.session_id == session_id)
            if rule_id is not None:
                q = q.where(JournalTxn.rule_id == rule_id)
            out = [_entry(t, replayed=False) for t in s.scalars(q)]
        if code is not None:
            out = [e for e in out if e.postings[0].account.code == code]
        return out

    def entry(self, event_id: str) -> JournalEntry | None:
        """The entry posted for ``event_id``, if any."""
        with self.db.sessions() as s, s.begin():
            txn = s.scalars(select(JournalTxn).where(JournalTxn.event_id == event_id)).first()
            return None if txn is None else _entry(txn, replayed=False)

    def rejected(self, event_id: str) -> str | None:
        """The remembered refusal reason of ``event_id``, if it was refused."""
        with self.db.sessions() as s, s.begin():
            rej = s.get(Rejection, event_id)
            return None if rej is None else rej.reason

    def verify(self) -> list[str]:
        """Check the invariants; return the violations found (empty when consistent).

        Each transaction sums to zero; each stored balance equals the sum of its postings;
        no account but a mint source is negative; all balances of a code sum to zero.
        """
        problems: list[str] = []
        with self.db.sessions() as s, s.begin():
            for txn_id, total in s.execute(
                select(PostingRow.transaction_id, func.sum(PostingRow.amount)).group_by(
                    PostingRow.transaction_id
                )
            ):
                if total != 0:
                    problems.append(f"transaction {txn_id} sums to {total}")
            sums: dict[int, Decimal] = {
                acc_id: total
                for acc_id, total in s.execute(
                    select(PostingRow.account_id, func.sum(PostingRow.amount)).group_by(
                        PostingRow.account_id
                    )
                )
            }
            per_code: dict[str, Decimal] = defaultdict(Decimal)
            for acc in s.scalars(select(Account)):
                expected = sums.get(acc.id, Decimal(0))
                if acc.balance != expected:
                    problems.append(f"account {acc.id} balance {acc.balance} != {expected}")
                if acc.balance < 0 and acc.kind != AccountKind.MINT_SOURCE:
                    problems.append(f"account {acc.id} is negative: {acc.balance}")
                per_code[acc.code] += acc.balance
            problems += [f"code {c} sums to {t}" for c, t in per_code.items() if t != 0]
        return problems


def _refusal(legs: Sequence[Posting], accounts: dict[AccountRef, Account]) -> str | None:
    """Why ``legs`` would make an account other than a mint source negative, if they would."""
    for p in legs:
        acc = accounts[p.account]
        if acc.balance + p.amount < 0 and acc.kind != AccountKind.MINT_SOURCE:
            return (
                f"{p.account.kind}:{p.account.owner}:{p.account.code} has {acc.balance}, "
                f"cannot debit {-p.amount}"
            )
    return None


def _pair(src: AccountRef, dst: AccountRef, amount: Decimal) -> list[Posting]:
    try:
        amount = to_amount(amount)
    except ValueError as exc:
        raise InvalidPostingError(str(exc)) from exc
    if amount <= 0:
        raise InvalidPostingError(f"amount must be positive, got {amount}")
    return [Posting(src, -amount), Posting(dst, amount)]
