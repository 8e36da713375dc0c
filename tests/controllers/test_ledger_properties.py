"""Property tests of the ledger invariants, on SQLite and PostgreSQL.

- the sum of all accounts but the mint source changes only by mint and burn;
- no balance but the mint source's is ever negative, whatever the operations; a refused
  operation leaves no trace;
- processing an event stream twice gives the same balances (idempotency on event id).
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from test_ledger_fixtures import *  # noqa: F403  (fixtures)
from test_ledger_fixtures import T0, new_code

from controllers.ledger import (
    AccountKind,
    AccountRef,
    InsufficientFundsError,
    JournalEntry,
    Ledger,
    TxnKind,
)

OWNERS = ["ann", "ben", "cat"]
amounts = st.decimals(
    min_value=Decimal("0.000001"), max_value=Decimal("500"), places=6, allow_nan=False
)
owners = st.sampled_from(OWNERS)
SETTINGS = settings(
    max_examples=12,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# an operation: (name, owner, other owner, amount)
ops = st.tuples(
    st.sampled_from(["mint", "transfer", "pay", "freeze", "release", "clawback", "burn"]),
    owners,
    owners,
    amounts,
)


def apply(ledger: Ledger, code: str, i: int, op: tuple[str, str, str, Decimal]) -> JournalEntry:
    """Apply one operation with the deterministic event id ``{code}:{i}``."""
    name, a, b, amount = op
    eid = f"{code}:{i}"
    wa, wb = AccountRef.wallet(a, code), AccountRef.wallet(b, code)
    if name == "mint":
        return ledger.mint(eid, wa, amount, at=T0, verified=True, session_id=f"s{i}", rule_id="r")
    if name == "transfer" and a != b:
        return ledger.transfer(eid, wa, wb, amount, at=T0)
    if name in ("transfer", "pay"):
        return ledger.transfer(eid, wa, AccountRef.treasury(code), amount, at=T0)
    if name == "freeze":
        return ledger.freeze(eid, a, code, amount, at=T0, actor="fm")
    if name == "release":
        return ledger.release(eid, a, code, amount, at=T0, actor="fm")
    if name == "clawback":
        return ledger.clawback(eid, a, code, amount, at=T0, actor="fm", burn=a == b)
    return ledger.burn(eid, wa, amount, at=T0)


def circulating(balances: dict[AccountRef, Decimal]) -> Decimal:
    return sum((v for k, v in balances.items() if k.kind != AccountKind.MINT_SOURCE), Decimal(0))


def test_invariants_stateful(ledger: Ledger) -> None:
    class LedgerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.code = new_code()
            self.n = 0
            self.minted = Decimal(0)
            self.burned = Decimal(0)
            self.model: dict[AccountRef, Decimal] = defaultdict(Decimal)
            self.done: list[tuple[int, tuple[str, str, str, Decimal], JournalEntry]] = []

        @rule(op=ops)
        def operate(self, op: tuple[str, str, str, Decimal]) -> None:
            before = ledger.balances(self.code)
            self.n += 1
            try:
                entry = apply(ledger, self.code, self.n, op)
            except InsufficientFundsError:
                assert ledger.entry(f"{self.code}:{self.n}") is None
                after = {k: v for k, v in ledger.balances(self.code).items() if v != 0}
                assert after == {k: v for k, v in before.items() if v != 0}
                return
            assert not entry.replayed
            self.done.append((self.n, op, entry))
            for p in entry.postings:
                self.model[p.account] += p.amount
            if entry.kind == TxnKind.MINT:
                self.minted += op[3]
            elif any(p.account.kind == AccountKind.MINT_SOURCE for p in entry.postings):
                self.burned += op[3]

        @rule(data=st.data())
        def replay(self, data: st.DataObject) -> None:
            if not self.done:
                return
            i, op, first = data.draw(st.sampled_from(self.done))
            before = ledger.balances(self.code)
            again = apply(ledger, self.code, i, op)
            assert again.replayed and again.txn_id == first.txn_id
            assert ledger.balances(self.code) == before

        @invariant()
        def balances_match_and_never_negative(self) -> None:
            bal = ledger.balances(self.code)
            for acc, v in bal.items():
                assert v == self.model[acc]
                if acc.kind != AccountKind.MINT_SOURCE:
                    assert v >= 0
            assert circulating(bal) == self.minted - self.burned
            assert sum(bal.values(), Decimal(0)) == 0

    run_state_machine_as_test(LedgerMachine, settings=SETTINGS)
    assert ledger.verify() == []


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=st.lists(ops, min_size=1, max_size=20))
def test_stream_twice_same_balances(ledger: Ledger, stream) -> None:
    code = new_code()

    def run() -> tuple[dict[AccountRef, Decimal], list[str]]:
        refused = []
        for i, op in enumerate(stream):
            try:
                apply(ledger, code, i, op)
            except InsufficientFundsError:
                refused.append(f"{code}:{i}")
        return ledger.balances(code), refused

    first, refused_first = run()
    second, refused_second = run()
    assert first == second and refused_first == refused_second
    assert len(ledger.entries(code=code)) == len(stream) - len(refused_first)
    assert all(v >= 0 for k, v in first.items() if k.kind != AccountKind.MINT_SOURCE)
