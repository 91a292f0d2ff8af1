// Validates the glTF/GLB files named on the command line; prints one JSON report per line
// ({file, numErrors, numWarnings, messages}) and exits 1 if any file has errors.
import { readFile } from "node:fs/promises";
import validator from "gltf-validator";

let failed = false;
for (const file of process.argv.slice(2)) {
  let report;
  try {
    report = await validator.validateBytes(new Uint8Array(await readFile(file)), {
      maxIssues: 50,
      externalResourceFunction: () => Promise.reject(new Error("external resources are not allowed")),
    });
  } catch (e) {  // not glTF at all
    report = { issues: { numErrors: 1, numWarnings: 0, messages: [{ code: "NOT_GLTF", message: String(e) }] } };
  }
  const { numErrors, numWarnings, messages } = report.issues;
  if (numErrors > 0) failed = true;
  console.log(JSON.stringify({ file, numErrors, numWarnings, messages }));
}
process.exit(failed ? 1 : 0);
