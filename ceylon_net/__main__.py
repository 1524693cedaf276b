"""``python -m ceylon_net``: what the commands are."""

import sys

COMMANDS = {
    "ceylon-admin": "coordinate a workspace: accept workers, hand out tasks (--tasks FILE to "
                    "run a file and exit)",
    "ceylon-worker": "join a workspace and run tasks (--app MODULE for your own handlers)",
    "ceylon-submit": "send a tasks file to a serving admin; --wait for the results",
    "ceylon-status": "workers, groups and queued tasks of a running admin",
    "ceylon-cancel": "cancel tasks on a running admin",
    "ceylon-keygen": "write a CURVE keypair for encrypted, authenticated workspaces",
}


def main() -> int:
    width = max(map(len, COMMANDS))
    lines = ["ceylon_net: a networked multi-process agent runtime. Commands:", ""]
    lines += [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    lines += ["", "Each has --help; shell completion: COMMAND --install-completion."]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
