// Validates one GLB file with the Khronos glTF validator and prints its JSON report.
// Usage: node tests/gltf_validate.mjs FILE.glb
import { readFile } from "node:fs/promises";
import validator from "gltf-validator";

const path = process.argv[2];
const data = new Uint8Array(await readFile(path));
const report = await validator.validateBytes(data, { maxIssues: 100 });
console.log(JSON.stringify(report));
