// Functions written with the official Inngest TypeScript SDK for the cases where Tidings must do
// exactly what Inngest does (tests/acceptance/test_inngest_node_parity.py; the SDK's own suite
// checks the same against the Inngest Dev Server). Served by node's own http server:
//
//   node cases.mjs <port>
import http from "node:http";
import { Inngest, referenceFunction } from "inngest";
import { serve } from "inngest/node";

const inngest = new Inngest({ id: "node-cases" });

// The error a step threw reaches the function on replay with its cause.
const stepErrors = inngest.createFunction(
  { id: "step-errors", retries: 1, triggers: [{ event: "cases/step.errors" }] },
  async ({ step }) => {
    try {
      await step.run("a", () => {
        throw new Error("Oh no!", { cause: new Error("This is the cause") });
      });
    } catch (err) {
      await step.run("b", () => `err was: "${err.message}" and the cause was: "${err.cause.message}"`);
    }
    await Promise.all([
      step.run("c succeeds", () => "c succeeds"),
      step
        .run("d fails", () => {
          throw new Error("D failed!");
        })
        .catch((err) => step.run("e succeeds", () => ({ errMessage: err.message }))),
    ]);
    await step.sendEvent("tell", { name: "cases/told", data: {} });
  },
);

const invokeMissing = inngest.createFunction(
  { id: "invoke-missing", triggers: [{ event: "cases/invoke.missing" }] },
  async ({ step }) => {
    await step.invoke("invoke-non-existent-fn", {
      function: referenceFunction({ functionId: "non-existent-fn" }),
    });
  },
);

const port = Number(process.argv[2]);
const server = http.createServer(serve({ client: inngest, functions: [stepErrors, invokeMissing] }));
server.listen(port, "127.0.0.1");
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
