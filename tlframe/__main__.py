from tlframe.train import main

main()
