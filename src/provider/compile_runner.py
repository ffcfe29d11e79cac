"""Runs a framework compiler in a compile Job's pod and hands its output back on the log.

The compiler (copied into /shared by the framework image) compiles the pipeline definition in
/kfp-operator/definition.json. Its output goes to stdout, base64 between framing lines; the
termination message holds its sha256 and size, which the operator checks. On failure the
termination message holds the compiler's last lines of output. Standard library only.
"""

import base64
import collections
import hashlib
import json
import os
import subprocess
import sys

BEGIN = "==== kfp-operator compiled pipeline begin ===="
END = "==== kfp-operator compiled pipeline end ===="
COMPILER = os.environ.get("KFP_COMPILER", "/shared/compile.sh")
DEFINITION = os.environ.get("KFP_DEFINITION", "/kfp-operator/definition.json")
OUTPUT = os.environ.get("KFP_OUTPUT", "/tmp/kfp-operator/compiled.json")
TERMINATION = os.environ.get("KFP_TERMINATION", "/dev/termination-log")
MESSAGE_LIMIT = 3800


def terminate(message, detail=""):
    """Writes `message` and as much of the end of `detail` as fits in MESSAGE_LIMIT bytes (the
    kubelet keeps at most 4096)."""
    head = message.encode("utf-8")
    room = max(MESSAGE_LIMIT - len(head), 0)
    tail = detail.encode("utf-8")[-room:] if room else b""
    with open(TERMINATION, "wb") as out:
        out.write(head[:MESSAGE_LIMIT] + tail.decode("utf-8", errors="ignore").encode("utf-8"))


def main():
    os.makedirs(os.path.dirname(OUTPUT), exist_ok=True)
    command = [COMPILER, "--output_file", OUTPUT, "--pipeline_config", DEFINITION]
    tail = collections.deque(maxlen=20)
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
    except OSError as error:
        terminate(f"the compiler {COMPILER} could not start: {error}")
        return 2
    for line in process.stdout:
        sys.stderr.write(line)
        tail.append(line.rstrip("\n"))
    status = process.wait()
    if status != 0:
        terminate(f"the compiler exited with status {status}: ", "\n".join(tail))
        return 1
    try:
        with open(OUTPUT, "rb") as compiled:
            output = compiled.read()
    except OSError as error:
        terminate(f"the compiler wrote no output to {OUTPUT}: {error}")
        return 1
    encoded = base64.b64encode(output).decode("ascii")
    sys.stdout.write(BEGIN + "\n")
    for start in range(0, len(encoded), 76):
        sys.stdout.write(encoded[start : start + 76] + "\n")
    sys.stdout.write(END + "\n")
    sys.stdout.flush()
    terminate(json.dumps({"sha256": hashlib.sha256(output).hexdigest(), "size": len(output)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
