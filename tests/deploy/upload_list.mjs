// Print, as JSON, the files `vercel deploy` would upload from a directory: the CLI's own
// buildFileTree (its bundled @vercel/client, which applies .vercelignore and the CLI's
// default ignores). Usage: node upload_list.mjs <vercel package dir> <project dir>
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [cliDir, projectDir] = process.argv.slice(2);
const chunks = join(cliDir, "dist", "chunks");
for (const name of readdirSync(chunks)) {
  const source = readFileSync(join(chunks, name), "utf8");
  if (!source.includes("buildFileTree:()=>") || !source.includes(" as require_dist}")) continue;
  const { require_dist } = await import(pathToFileURL(join(chunks, name)).href);
  const client = require_dist();
  if (typeof client?.buildFileTree !== "function") continue;
  const { fileList } = await client.buildFileTree(projectDir, { isDirectory: true }, () => {});
  console.log(JSON.stringify(fileList));
  process.exit(0);
}
console.error("buildFileTree not found in this Vercel CLI");
process.exit(1);
