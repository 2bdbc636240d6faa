// The `greet` workflow as a Node.js activity server, with Node's own http module only.
//
//     node node_activity.js 9403
"use strict";
const http = require("http");

const activities = {
  "/greet": (call, base) => ({
    name: "greet",
    data: { greeting: `hello ${(call.data && call.data.name) || "stranger"}` },
    next_activities: { definitions: [{ name: "shout", url: `${base}/shout` }] },
  }),
  // A later task gets its parent's answer data, and the parent's name as requestor.
  "/shout": (call) => ({
    name: "shout",
    data: { loud: call.data.greeting.toUpperCase(), after: call.requestor },
  }),
};

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const activity = req.method === "POST" && activities[req.url];
    let status = 200;
    let answer;
    if (!activity) {
      status = 404;
      answer = { error: "no such activity" };
    } else {
      // X-Cameron-Job, X-Cameron-Task and X-Cameron-Attempt name the call (req.headers).
      answer = activity(JSON.parse(Buffer.concat(chunks).toString("utf8")), `http://${req.headers.host}`);
    }
    const payload = JSON.stringify(answer);
    res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(payload) });
    res.end(payload);
  });
});

server.listen(Number(process.argv[2] || 9403), "127.0.0.1");
// Cameron keeps connections alive between calls; stop on SIGTERM like the other servers.
process.on("SIGTERM", () => server.close(() => process.exit(0)));
