// A worker written with the official Inngest TypeScript SDK that serves its functions over
// Connect: it dials out to the server's gateway and listens on no port. For
// tests/acceptance/test_inngest_node_connect.py; the environment (INNGEST_DEV,
// INNGEST_BASE_URL) decides which server it talks to. Node 20 needs --experimental-websocket.
//
//   node --experimental-websocket connect.mjs <instance id>
import { Inngest } from "inngest";
import { connect } from "inngest/connect";

const inngest = new Inngest({ id: "node-connect" });

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

const connection = await connect({
  apps: [{ client: inngest, functions: [flow] }],
  instanceId: process.argv[2] || "node-worker",
  // In this process: Node 20 gives worker threads no WebSocket, whatever the flags.
  isolateExecution: false,
});
console.log(`connected: ${connection.connectionId}`);
await connection.closed;
