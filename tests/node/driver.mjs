// Functions written with the official Inngest TypeScript SDK for
// tests/acceptance/test_inngest_node_driver.py: a parallel group and the steps after it, a race
// group, step.ai.infer. Each function notes what its code saw (how many requests reached it,
// the order its steps ran in), which GET /seen answers. Nothing in it knows about Tidings.
//
//   PROVIDER_URL=… PROVIDER_KEY=… node driver.mjs <port>
import http from "node:http";
import { Inngest } from "inngest";
import { serve } from "inngest/node";

const inngest = new Inngest({ id: "node-parity" });
const seen = {};
const note = (key, what) => (seen[key] ??= []).push(what);
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const groupThenTwo = inngest.createFunction(
  { id: "group-then-two", retries: 0, triggers: [{ event: "node-parity/group-then-two" }] },
  async ({ step }) => {
    note("group-then-two", "request");
    const pair = await Promise.all([step.run("p1", () => 1), step.run("p2", () => 2)]);
    const first = await step.run("first", () => "A");
    const second = await step.run("second", () => "B");
    return { pair, first, second };
  },
);

const race = inngest.createFunction(
  { id: "race", retries: 0, triggers: [{ event: "node-parity/race" }] },
  async ({ step, group }) => {
    note("race-requests", "request");
    const mark = (name, ms) => async () => {
      await pause(ms);
      note("race", name);
      return name;
    };
    await group.parallel({ mode: "race" }, () =>
      Promise.all([
        (async () => {
          await step.run("a.1", mark("a.1", 0));
          await step.run("a.2", mark("a.2", 0));
        })(),
        (async () => {
          await step.run("b.1", mark("b.1", 1000));
          await step.run("b.2", mark("b.2", 1000));
        })(),
      ]),
    );
    return "raced";
  },
);

const infer = inngest.createFunction(
  { id: "infer", retries: 1, triggers: [{ event: "node-parity/infer" }] },
  async ({ event, step }) => {
    const answer = await step.ai.infer("ask", {
      model: step.ai.models.anthropic({
        model: "claude-parity",
        apiKey: process.env.PROVIDER_KEY,
        baseUrl: `${process.env.PROVIDER_URL}/v1/`,
        defaultParameters: { max_tokens: 16 },
      }),
      body: { messages: event.data.prompt.messages },
    });
    return { answer };
  },
);

const handler = serve({ client: inngest, functions: [groupThenTwo, race, infer] });
const server = http.createServer((req, res) => {
  if (req.url === "/seen") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(seen));
    return;
  }
  return handler(req, res);
});
server.listen(Number(process.argv[2]), "127.0.0.1");
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
