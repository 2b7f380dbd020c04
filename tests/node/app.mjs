// An app written with the official Inngest TypeScript SDK and served by node's own http server,
// for tests/acceptance/test_inngest_node_functions.py. Nothing in it knows about Tidings: the
// environment (INNGEST_DEV, INNGEST_BASE_URL, INNGEST_SIGNING_KEY, INNGEST_EVENT_KEY) decides
// which server it talks to.
//
//   node app.mjs serve <port>                   serve the functions on /api/inngest
//   node app.mjs send <name> <json> [<meta>]    send one event with the SDK's client (with
//                                               that meta, JSON), print its ids
import http from "node:http";
import { Inngest, NonRetriableError } from "inngest";
import { serve } from "inngest/node";

const inngest = new Inngest({ id: "node-app" });

const double = inngest.createFunction(
  { id: "double", triggers: [{ event: "node/double" }] },
  async ({ event }) => ({ y: event.data.x * 2 }),
);

const flow = inngest.createFunction(
  { id: "flow", triggers: [{ event: "node/flow" }], retries: 2 },
  async ({ event, step, attempt }) => {
    const first = await step.run("first", () => "A");
    await step.sleep("nap", "1s");
    const approval = await step.waitForEvent("approval", {
      event: "node/approved",
      timeout: "2m",
      if: "event.data.id == async.data.id",
    });
    const doubled = await step.invoke("call-double", { function: double, data: { x: 21 } });
    const pair = await Promise.all([
      step.run("p1", () => 1),
      step.run("p2", () => 2),
    ]);
    const after = await step.run("after", () => "done");
    return {
      first,
      approvedBy: approval ? approval.data.by : null,
      doubled,
      parallel: pair,
      after,
      id: event.data.id,
      attempt,
    };
  },
);

const flaky = inngest.createFunction(
  { id: "flaky", triggers: [{ event: "node/flaky" }], retries: 3 },
  async ({ step, attempt }) => {
    const shaky = await step.run("shaky", () => {
      if (attempt < 2) throw new Error(`step failing on attempt ${attempt}`);
      return `ok on attempt ${attempt}`;
    });
    return { shaky };
  },
);

const fragile = inngest.createFunction(
  { id: "fragile", triggers: [{ event: "node/fragile" }], retries: 3 },
  async ({ step }) => {
    await step.run("break", () => {
      throw new NonRetriableError("broken for good");
    });
    return "unreachable";
  },
);

// Sessions (event meta): what a run receives, and what it passes on. The SDK reads
// `ctx.sessions` from its events' `meta.sessions` and stamps them on what the run sends and
// invokes (`meta.propagated_sessions`), for the server to fold into the new event's sessions.
const sessionChild = inngest.createFunction(
  { id: "session-child", triggers: [{ event: "node/session.child" }] },
  async ({ event, sessions }) => ({ meta: event.meta ?? null, sessions: sessions ?? null }),
);

const sessionParent = inngest.createFunction(
  { id: "session-parent", triggers: [{ event: "node/session.start" }] },
  async ({ event, sessions, step }) => {
    const sent = await step.sendEvent("tell", {
      name: "node/session.child",
      data: {},
      meta: { sessions: { topic: "t-1" } },
    });
    const invoked = await step.invoke("ask", { function: sessionChild, data: {} });
    return { meta: event.meta ?? null, sessions: sessions ?? null, sent: sent.ids, invoked };
  },
);

const functions = [double, flow, flaky, fragile, sessionChild, sessionParent];

const [command, ...args] = process.argv.slice(2);
if (command === "serve") {
  const port = Number(args[0]);
  const server = http.createServer(serve({ client: inngest, functions }));
  server.listen(port, "127.0.0.1");
  const stop = () => server.close(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
} else if (command === "send") {
  const [name, data, meta] = args;
  const event = { name, data: JSON.parse(data ?? "{}") };
  if (meta) event.meta = JSON.parse(meta);
  const { ids } = await inngest.send(event);
  console.log(JSON.stringify({ ids }));
} else {
  console.error("usage: node app.mjs serve <port> | send <name> <json> [<meta>]");
  process.exit(2);
}
