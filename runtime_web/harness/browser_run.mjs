// Browser runner: exposes window.kilnRun(libraryUrl, request) for the Playwright test driver.
// The page's server maps /tvmjs/ to the built tvmjs bundle.
import * as tvmjs from "/tvmjs/tvmjs.bundle.mjs";
import { runFunction } from "./run_function.mjs";

window.kilnRun = async (libraryUrl, request) => {
  const response = await fetch(libraryUrl);
  if (!response.ok) {
    throw new Error(`fetching ${libraryUrl} failed: HTTP ${response.status}`);
  }
  return runFunction(tvmjs, await response.arrayBuffer(), request, (msg) => console.log(msg));
};
window.kilnReady = true;
