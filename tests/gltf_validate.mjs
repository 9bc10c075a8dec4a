// Validates one GLB (or glTF) file with the Khronos glTF validator and prints its JSON report.
// Usage: node tests/gltf_validate.mjs FILE.glb
// Exit status: 0 when a report was printed (whatever it says), 2 when the file could not be validated.
import { readFile } from "node:fs/promises";
import validator from "gltf-validator";

const path = process.argv[2];
if (!path) {
  console.error("usage: node tests/gltf_validate.mjs FILE.glb");
  process.exit(2);
}
try {
  const data = new Uint8Array(await readFile(path));
  const report = await validator.validateBytes(data, { maxIssues: 100 });
  console.log(JSON.stringify(report));
} catch (error) {
  console.error(`cannot validate ${path}: ${error}`);
  process.exit(2);
}
