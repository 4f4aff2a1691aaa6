// The github-script stand-in's runner: the script with a recording fake of the GitHub REST API.
"use strict";
const fs = require("fs");
const path = require("path");

const state = process.env.ACT_STANDIN_STATE;
if (!state) throw new Error("ACT_STANDIN_STATE is not set: the act tests set it");
const folder = path.join(state, "github");
fs.mkdirSync(folder, { recursive: true });
const event = JSON.parse(fs.readFileSync(process.env.GITHUB_EVENT_PATH, "utf8"));
const [owner, repo] = process.env.GITHUB_REPOSITORY.split("/");

function record(call, params) {
  fs.appendFileSync(path.join(folder, "calls.jsonl"), JSON.stringify({ call, params }) + "\n");
}
function commentsFile(issue) {
  return path.join(folder, `comments-${issue}.json`);
}
function load(issue) {
  const file = commentsFile(issue);
  return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, "utf8")) : [];
}
function save(issue, comments) {
  fs.writeFileSync(commentsFile(issue), JSON.stringify(comments, null, 2));
}
function checkRepo(params) {
  if (params.owner !== owner || params.repo !== repo) {
    throw new Error(`fake GitHub API: ${params.owner}/${params.repo} is not ${owner}/${repo}`);
  }
}
const user = { login: "github-actions[bot]", type: "Bot" };
const issues = {
  async listComments(params) {
    checkRepo(params);
    record("issues.listComments", params);
    return { status: 200, data: load(params.issue_number) };
  },
  async createComment(params) {
    checkRepo(params);
    record("issues.createComment", params);
    const comments = load(params.issue_number);
    const comment = { id: 1000 + comments.length, body: params.body, user };
    save(params.issue_number, [...comments, comment]);
    return { status: 201, data: comment };
  },
  async updateComment(params) {
    checkRepo(params);
    record("issues.updateComment", params);
    for (const file of fs.readdirSync(folder).filter((f) => f.startsWith("comments-"))) {
      const issue = file.slice("comments-".length, -".json".length);
      const comments = load(issue);
      const comment = comments.find((c) => c.id === params.comment_id);
      if (comment) {
        comment.body = params.body;
        save(issue, comments);
        return { status: 200, data: comment };
      }
    }
    throw new Error(`fake GitHub API: no comment ${params.comment_id}`);
  },
};
// Issues (the monitor workflow's one issue) live in issues.json; numbers count from 1.
function loadIssues() {
  const file = path.join(folder, "issues.json");
  return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, "utf8")) : [];
}
function saveIssues(all) {
  fs.writeFileSync(path.join(folder, "issues.json"), JSON.stringify(all, null, 2));
}
Object.assign(issues, {
  async listForRepo(params) {
    checkRepo(params);
    record("issues.listForRepo", params);
    const wanted = (params.labels || "").split(",").filter(Boolean);
    const found = loadIssues().filter(
      (i) =>
        (params.state === "all" || i.state === (params.state || "open")) &&
        wanted.every((label) => i.labels.some((l) => l.name === label)),
    );
    return { status: 200, data: found };
  },
  async create(params) {
    checkRepo(params);
    record("issues.create", params);
    const all = loadIssues();
    const issue = {
      number: all.length + 1, title: params.title, body: params.body, state: "open", user,
      labels: (params.labels || []).map((name) => ({ name })),
    };
    saveIssues([...all, issue]);
    return { status: 201, data: issue };
  },
  async update(params) {
    checkRepo(params);
    record("issues.update", params);
    const all = loadIssues();
    const issue = all.find((i) => i.number === params.issue_number);
    if (!issue) throw new Error(`fake GitHub API: no issue ${params.issue_number}`);
    for (const key of ["title", "body", "state", "state_reason"]) {
      if (params[key] !== undefined) issue[key] = params[key];
    }
    saveIssues(all);
    return { status: 200, data: issue };
  },
});
const actions = {
  async createWorkflowDispatch(params) {
    checkRepo(params);
    record("actions.createWorkflowDispatch", params);
    return { status: 204, data: undefined };
  },
};
const unsupported = (name) =>
  new Proxy({}, { get: (_, key) => { throw new Error(`fake GitHub API: ${name}.${String(key)} is not faked`); } });
const github = {
  rest: new Proxy({ issues, actions }, { get: (target, key) => target[key] || unsupported(`rest.${String(key)}`) }),
  async paginate(method, params) {
    return (await method(params)).data;
  },
};
const payload = event;
const context = {
  payload,
  eventName: process.env.GITHUB_EVENT_NAME,
  sha: process.env.GITHUB_SHA,
  ref: process.env.GITHUB_REF,
  workflow: process.env.GITHUB_WORKFLOW,
  action: process.env.GITHUB_ACTION,
  actor: process.env.GITHUB_ACTOR,
  job: process.env.GITHUB_JOB,
  runId: Number(process.env.GITHUB_RUN_ID),
  runNumber: Number(process.env.GITHUB_RUN_NUMBER),
  serverUrl: process.env.GITHUB_SERVER_URL,
  apiUrl: process.env.GITHUB_API_URL,
  repo: { owner, repo },
  issue: { owner, repo, number: (payload.issue || payload.pull_request || payload).number },
};
const core = {
  setOutput: (name, value) => fs.appendFileSync(process.env.GITHUB_OUTPUT, `${name}=${value}\n`),
  setFailed: (message) => { console.log(`::error::${message}`); process.exitCode = 1; },
  info: (m) => console.log(m),
  debug: (m) => console.log(`::debug::${m}`),
  notice: (m) => console.log(`::notice::${m}`),
  warning: (m) => console.log(`::warning::${m}`),
  error: (m) => console.log(`::error::${m}`),
};
const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
const run = new AsyncFunction("github", "context", "core", "require", "process", process.env.INPUT_SCRIPT);
run(github, context, core, require, process).then(
  (result) => {
    const encoded = process.env.INPUT_RESULT_ENCODING === "string" ? String(result ?? "") : JSON.stringify(result ?? null);
    fs.appendFileSync(process.env.GITHUB_OUTPUT, `result<<__RESULT__\n${encoded}\n__RESULT__\n`);
  },
  (error) => { console.log(`::error::${error.stack || error}`); process.exitCode = 1; },
);
