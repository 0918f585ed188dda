"""Signs one message with the `standardwebhooks` library: argv = secret, id,
timestamp (unix seconds), body. Prints the `v1,…` signature."""
import sys
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook

secret, msg_id, ts, body = sys.argv[1:5]
at = datetime.fromtimestamp(int(ts), tz=timezone.utc)
print(Webhook(secret).sign(msg_id, at, body))
