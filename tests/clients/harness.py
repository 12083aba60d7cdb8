"""The check runner shared by the Python client tests.

Each test script defines `check_*` functions that raise on failure; `run` calls them all, prints
`ok NAME` or `FAIL NAME: reason` per check, ends with the line `N passed, M failed`, and returns
the process exit code (1 if anything failed).
"""

import traceback


class CheckFailed(Exception):
    """A check found the client's result wrong."""


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def run(title, checks):
    print(f"# {title}", flush=True)
    passed = failed = 0
    for fn in checks:
        name = fn.__name__.removeprefix("check_")
        try:
            fn()
        except CheckFailed as e:
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)
        except Exception as e:  # noqa: BLE001 - any client error is a failed check
            failed += 1
            where = traceback.extract_tb(e.__traceback__)[-1]
            print(f"FAIL {name}: {type(e).__name__}: {e} (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})",
                  flush=True)
        else:
            passed += 1
            print(f"ok {name}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0
