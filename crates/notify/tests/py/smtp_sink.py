"""A real SMTP server for the tests (aiosmtpd): listens on 127.0.0.1 on a free
port, prints the port on its first line, and writes every message it receives
to DIR/<n>.eml (envelope recipients in DIR/<n>.rcpt), until stdin closes."""
import os
import sys

import asyncio

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, folder):
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.folder, f"{self.count:05d}")
        with open(base + ".rcpt.tmp", "w") as f:
            f.write("\n".join(envelope.rcpt_tos))
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(base + ".rcpt.tmp", base + ".rcpt")
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 Message accepted for delivery"


async def serve(folder):
    loop = asyncio.get_running_loop()
    handler = Sink(folder)
    server = await loop.create_server(lambda: SMTP(handler), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    # Until the test closes stdin.
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


asyncio.run(serve(sys.argv[1]))
