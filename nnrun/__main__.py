from nnrun.entry import main

main()
