// A worker written with the official Inngest TypeScript SDK that serves its functions over
// Connect: it dials out to the server's gateway and listens on no port. For
// tests/acceptance/test_inngest_node_connect.py; the environment (INNGEST_DEV,
// INNGEST_BASE_URL, INNGEST_SIGNING_KEY) decides which server it talks to. Every step of
// `slow` that runs is written to STEP_LOG as <worker>:<run id>:<step>:<unix time>; its long
// step waits until the file data.gate exists. Node 20 needs --experimental-websocket.
//
//   node --experimental-websocket connect.mjs <instance id>
import { appendFileSync, existsSync } from "node:fs";
import { Inngest } from "inngest";
import { connect } from "inngest/connect";

const inngest = new Inngest({ id: "node-connect" });
const worker = process.argv[2] || "node-worker";

function note(runId, step) {
  if (process.env.STEP_LOG) {
    appendFileSync(process.env.STEP_LOG, `${worker}:${runId}:${step}:${Date.now() / 1000}\n`);
  }
}

const flow = inngest.createFunction(
  { id: "flow", triggers: [{ event: "node-connect/flow" }] },
  async ({ event, step }) => {
    const first = await step.run("first", () => "A");
    await step.sleep("nap", "1s");
    const approval = await step.waitForEvent("approval", {
      event: "node-connect/approved",
      timeout: "2m",
      if: "event.data.id == async.data.id",
    });
    const pair = await Promise.all([step.run("p1", () => 1), step.run("p2", () => 2)]);
    return { first, approvedBy: approval ? approval.data.by : null, parallel: pair,
             id: event.data.id };
  },
);

const slow = inngest.createFunction(
  { id: "slow", triggers: [{ event: "node-connect/slow" }] },
  async ({ event, step, runId }) => {
    const recordedBy = await step.run("recorded", () => {
      note(runId, "recorded");
      return worker;
    });
    const longBy = await step.run("long", async () => {
      note(runId, "long-start");
      while (event.data.gate && !existsSync(event.data.gate)) {
        await new Promise((resolve) => setTimeout(resolve, 50));  // held until the test opens it
      }
      note(runId, "long-end");
      return worker;
    });
    return { recorded_by: recordedBy, long_by: longBy };
  },
);

const connection = await connect({
  apps: [{ client: inngest, functions: [flow, slow] }],
  instanceId: worker,
  // In this process: Node 20 gives worker threads no WebSocket, whatever the flags.
  isolateExecution: false,
});
console.log(`connected: ${connection.connectionId}`);
await connection.closed;
