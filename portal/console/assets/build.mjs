// The console's asset build: Chart.js from the npm registry (pinned in package-lock.json), copied into the
// portal's static files, where WhiteNoise serves it; no CDN at run time, so the console works offline.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const target = join(here, "..", "static", "console", "vendor");
mkdirSync(target, { recursive: true });
copyFileSync(join(here, "node_modules", "chart.js", "dist", "chart.umd.min.js"), join(target, "chart.umd.min.js"));
console.log(`console assets: ${join(target, "chart.umd.min.js")}`);
