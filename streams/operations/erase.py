"""`mailstream erase EMAIL [--note TEXT] [--yes]`: forget a person (GDPR-style erasure).

The ERASE command travels on email.commands like `mailstream suppress` (same sending code, same
key and partition) to the state agent, which deletes the recipient's table entry, tombstones
its keys on email.recipient-state and email.suppressions, and publishes an Erasure record on
email.erasures: the address's keyed hash (MAILSTREAM_ERASURE_KEY), who and when. From then on
every record of the address is dropped, a replay included, and the downstream suppression list
answers "suppressed" (reason ERASED) for it. What stays, and for how long: README, Erasure.
"""

from __future__ import annotations

import argparse
import time
import uuid


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "erase",
        help="forget a recipient: state tombstoned, only a keyed hash of the address kept",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("email")
    parser.add_argument("--note", help="a ticket reference (never the address)")
    parser.add_argument("--actor", help="who requests the erasure (default: user@host)")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for the worker (0: do not wait)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mailstream.commands import CommandAction, OperatorCommand, default_actor, normalize_address
    from mailstream.erasure import check_note, required_key
    from mailstream.settings import Settings
    from mailstream.streams.operations.confirmation import confirmation
    from mailstream.streams.operations.suppress import send_and_confirm

    # a missing key (ErasureKeyMissing), a malformed address or a note holding the address
    # (CommandError) exits 2 through mailstream.cli.main, before anything is sent
    required_key(Settings.from_env().erasure_key)
    recipient = normalize_address(args.email)
    check_note(args.note, recipient)
    confirm = confirmation("erase", args.yes, "Erasure cannot be undone. Proceed?")
    if confirm is None:
        return 2
    plan = (
        f"erase {recipient}: its state and suppression tombstoned, every later record of it "
        "dropped; only a keyed hash of the address is kept"
    )
    if not confirm(plan):
        print("erase aborted: nothing sent")
        return 1
    command = OperatorCommand(
        action=CommandAction.ERASE,
        recipient=recipient,
        actor=args.actor or default_actor(),
        requested_at=int(time.time() * 1000),
        note=args.note,
        command_id=uuid.uuid4().hex,
    )
    return send_and_confirm(command, args.wait)
