/**
 * The `migration` suite (issue 5, "Benchmark").
 *
 * OWNER: the migration-bench helper (senior engineer session working issue 5's
 * benchmark). Do not start a second implementation of this suite: coordinate
 * with the owner, or extend this file.
 *
 * Work in progress: the suite is being built; this stub only registers it.
 */
import type { Suite, SuiteOptions, SuiteRun } from '../suite.js';

export const migrationSuite: Suite = {
  name: 'migration',
  async run(_opts: SuiteOptions, _log: (line: string) => void): Promise<SuiteRun> {
    return { json: { results: [] }, text: 'migration suite: not implemented yet (in progress)\n' };
  },
};
