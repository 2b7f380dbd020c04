// Sends events to a Tidings server with the official Inngest TypeScript SDK, for
// tests/acceptance/test_inngest_node.py.
//
//   node send.mjs <base-url> [scenario]      (or TIDINGS_URL=<base-url> node send.mjs)
//
// Scenarios:
//   send  (default)  one event, then a list of two
//   meta             one event carrying meta.sessions (a field of SDK v4 events)
//   shed             one event of about 2 kB (for a server that sheds load)
//
// Prints one JSON object on stdout: the ids each send() returned, and every HTTP request the
// SDK made (through the `fetch` option), with its answer's status and Retry-After, so a test
// can see what went over the wire. When a send() throws, prints the SDK's error message
// instead of ids and exits with status 1.
import { Inngest } from "inngest";

const baseUrl = process.argv[2] ?? process.env.TIDINGS_URL;
const scenario = process.argv[3] ?? "send";
if (!baseUrl) {
  console.error("usage: node send.mjs <base-url> [send|meta|shed]  (or set TIDINGS_URL)");
  process.exit(2);
}

const requests = [];
const recordingFetch = async (url, init) => {
  const request = {
    url: String(url),
    method: init?.method,
    headers: init?.headers ?? {},
    body: JSON.parse(init?.body ?? "null"),
  };
  requests.push(request);
  const response = await fetch(url, init);
  request.status = response.status;
  request.retryAfter = response.headers.get("retry-after");
  process.stderr.write(`answered ${response.status}\n`); // as it happens, for a test to follow
  return response;
};

const inngest = new Inngest({ id: "node-app", isDev: true, baseUrl, fetch: recordingFetch });

const scenarios = {
  send: async () => ({
    one: (await inngest.send({ name: "node/hello.world", data: { email: "node@example.com" } }))
      .ids,
    many: (
      await inngest.send([
        {
          name: "node/order.created",
          data: { order: 1, items: ["a", "b"] },
          id: "node-order-1",
          ts: 1700000000000,
          v: "2024-01-01.1",
        },
        { name: "node/order.created", data: { order: 2 } },
      ])
    ).ids,
  }),
  shed: async () => ({
    one: (await inngest.send({ name: "node/shed", data: { pad: "x".repeat(2000) } })).ids,
  }),
  meta: async () => ({
    one: (
      await inngest.send({
        name: "node/session.event",
        data: { step: 1 },
        meta: { sessions: { user: "user-1" } },
      })
    ).ids,
  }),
};

const run = scenarios[scenario];
if (!run) {
  console.error(`unknown scenario ${JSON.stringify(scenario)}: use ${Object.keys(scenarios)}`);
  process.exit(2);
}

try {
  const ids = await run();
  console.log(JSON.stringify({ ids, requests }));
} catch (err) {
  console.log(JSON.stringify({ error: String(err?.message ?? err), requests }));
  process.exit(1);
}
