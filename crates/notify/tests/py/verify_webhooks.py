"""Verifies deliveries with the third-party Standard Webhooks verifier
(`standardwebhooks` from PyPI). Reads a JSON list of
{"secret", "headers": {name: value}, "body": "<exact body text>"} on stdin and
prints a JSON list of {"ok": bool, "id": ..., "error": ...} in the same order."""
import json
import sys

from standardwebhooks.webhooks import Webhook

results = []
for item in json.load(sys.stdin):
    try:
        payload = Webhook(item["secret"]).verify(item["body"], item["headers"])
        results.append({"ok": True, "id": payload.get("id"), "error": None})
    except Exception as e:  # the verifier's own error, reported to the test
        results.append({"ok": False, "id": None, "error": f"{type(e).__name__}: {e}"})
print(json.dumps(results))
