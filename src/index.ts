/** The action's entry point, as action.yml runs it (node24; also Node 20). */
import { run } from './main.js'

void run()
