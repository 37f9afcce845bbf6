// Builds the dashboard page into crates/posture-web/assets (committed; the binary embeds it, so
// neither cargo nor the release needs Node): app.js (src/app.js with uPlot, bundled and minified
// by esbuild), app.css (uPlot's stylesheet and src/app.css), index.html.
//
//   npm ci && npm run build     rebuild the assets from the sources and package-lock.json
//   npm run check               rebuild in memory; fail unless the committed assets are identical
import { build } from "esbuild";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "crates", "posture-web", "assets");
const check = process.argv.includes("--check");

// uPlot's notice (its header comment is not a legal comment that esbuild keeps).
const uplot = JSON.parse(readFileSync(join(here, "node_modules", "uplot", "package.json"), "utf8"));
const js = await build({
  banner: {
    js: `/*! posture's dashboard page (Apache-2.0). Bundles uPlot ${uplot.version}, Copyright (c) 2025 Leon Sorokin, MIT License, https://github.com/leeoniya/uPlot */`,
  },
  entryPoints: [join(here, "src", "app.js")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  legalComments: "eof",
  write: false,
  logLevel: "warning",
});
const files = {
  "app.js": js.outputFiles[0].text,
  "app.css":
    "/* uPlot (MIT), node_modules/uplot/dist/uPlot.min.css */\n" +
    readFileSync(join(here, "node_modules", "uplot", "dist", "uPlot.min.css"), "utf8").trim() +
    "\n" +
    readFileSync(join(here, "src", "app.css"), "utf8"),
  "index.html": readFileSync(join(here, "src", "index.html"), "utf8"),
};

let stale = [];
for (const [name, text] of Object.entries(files)) {
  const path = join(out, name);
  if (check) {
    let old = "";
    try {
      old = readFileSync(path, "utf8");
    } catch {
      // missing: stale
    }
    if (old !== text) stale.push(name);
  } else {
    mkdirSync(out, { recursive: true });
    writeFileSync(path, text);
  }
}
if (check && stale.length) {
  console.error(`web: crates/posture-web/assets/${stale.join(", ")} differ from a build of web/: run scripts/web build and commit`);
  process.exit(1);
}
console.log(check ? "web: the committed assets are what web/ builds" : `web: built ${Object.keys(files).join(", ")} into ${out}`);
